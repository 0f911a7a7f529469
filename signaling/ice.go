package signaling

import (
	"encoding/json"
	"net/http"
	"time"
)

// serveICE answers GET /ice?ugi=GAME&instance_id=ID&key=ICE_KEY with fresh
// ICE servers for that live, INIT'd session, as INIT_OK carries them. The
// TURN credentials are the player's, so the request must prove it is the
// player: key is the ice_key of its INIT_OK (the instance id alone is public:
// FIND_ACK, NEW_PEER and PEER_JOIN carry it). The Origin is checked as for
// an upgrade, and requests are limited per client IP. A wrong key and an
// unknown player get the same 404.
func (s *Server) serveICE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	status, text := s.checkOrigin(r)
	if status == http.StatusOK && !s.iceRequests.allow(clientIP(r), time.Now()) {
		status, text = http.StatusTooManyRequests, "too many requests from your address, try again later"
	}
	if status != http.StatusOK {
		http.Error(w, text, status)
		return
	}
	w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
	w.Header().Set("Vary", "Origin")
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	ice, ok := s.hub.ICE(q.Get("ugi"), q.Get("instance_id"), q.Get("key"))
	if !ok {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ice)
}

// checkOrigin maps the request's Origin header to the status of its
// refusal, or 200: a missing Origin gets 418 (as v1.0), one not in
// Config.AllowedOrigins 403.
func (s *Server) checkOrigin(r *http.Request) (int, string) {
	switch origin := r.Header.Get("Origin"); {
	case origin == "":
		return http.StatusTeapot, "missing Origin header"
	case !s.origins.allows(origin):
		return http.StatusForbidden, "origin not allowed"
	}
	return http.StatusOK, ""
}
