package migration

// TokenHash returns the hash of session id's current token, for a store
// that must let another process honour it (the token itself is never kept).
func (r *Resumes) TokenHash(id string) ([32]byte, bool) {
	h, ok := r.tokens[id]
	return h, ok
}

// Adopt gives session id the token whose hash is h, as TokenHash reported
// it elsewhere, revoking any token id had.
func (r *Resumes) Adopt(id string, h [32]byte) {
	r.revoke(id)
	if old, ok := r.byToken[h]; ok {
		r.revoke(old)
	}
	r.byToken[h] = id
	r.tokens[id] = h
}
