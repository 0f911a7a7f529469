package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// shareRecordVersion is the version of the records Share writes; a record
// of another version is skipped (a newer core's), with a log line.
const shareRecordVersion = 1

// maxShareRecord bounds one record, like a control-plane frame.
const maxShareRecord = MaxFrame

// shareRecord is one node of a core as stored in Redis: a field of the
// core's hash, named by the node id, holding this object as JSON.
type shareRecord struct {
	V int `json:"v"`
	// Seq is the publishing core's publish count: a reader that sees it
	// change knows the core is alive and the age is fresh.
	Seq   uint64 `json:"seq"`
	Hello Hello  `json:"hello"`
	Load  Load   `json:"load"`
	// Reported: the node has sent a report (it is not picked before).
	Reported bool `json:"reported,omitempty"`
	// AgeMS is how long before the publish its last report arrived.
	AgeMS int64 `json:"age_ms"`
	// SinceMS is when it registered, Unix milliseconds of the owner's clock.
	SinceMS int64 `json:"since_ms"`
	// Remote is where its control connection comes from ("local" for a
	// node in the owner's process).
	Remote string `json:"remote,omitempty"`
	// Relay is its relay peer's id and token (no broker URL).
	Relay *RelayGrant `json:"relay,omitempty"`
}

// encodeShareRecord is n's record for publish number seq.
func encodeShareRecord(n ownNode, seq uint64) ([]byte, error) {
	rec := shareRecord{
		V:   shareRecordVersion,
		Seq: seq,
		Hello: Hello{
			NodeID: n.info.ID, Region: n.info.Region, Version: n.info.Version,
			Addrs: n.info.Addrs, Capacity: n.info.Capacity, Relay: n.relay.ID != "",
		},
		Load:     n.info.Load,
		Reported: n.reported,
		AgeMS:    n.age.Milliseconds(),
		SinceMS:  n.info.Since.UnixMilli(),
		Remote:   n.info.Remote,
	}
	if n.relay.ID != "" {
		rec.Relay = &RelayGrant{ID: n.relay.ID, Token: n.relay.Token}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("fleet: share record of %s: %w", n.info.ID, err)
	}
	return b, nil
}

// errBadRecord: a record in Redis is not one this version can use.
var errBadRecord = errors.New("fleet: bad shared node record")

// decodeShareRecord parses the record stored under field (the node id)
// and checks it as the control plane checks a Hello and a Load.
func decodeShareRecord(field string, b []byte) (shareRecord, error) {
	var rec shareRecord
	if len(b) == 0 || len(b) > maxShareRecord {
		return rec, fmt.Errorf("%w: %d bytes", errBadRecord, len(b))
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return shareRecord{}, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	if rec.V != shareRecordVersion {
		return shareRecord{}, fmt.Errorf("%w: version %d, want %d", errBadRecord, rec.V, shareRecordVersion)
	}
	if err := rec.Hello.validate(); err != nil {
		return shareRecord{}, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	if rec.Hello.NodeID != field {
		return shareRecord{}, fmt.Errorf("%w: node %q stored under %q", errBadRecord, clip(rec.Hello.NodeID), clip(field))
	}
	if err := rec.Load.validate(); err != nil {
		return shareRecord{}, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	if rec.AgeMS < 0 || rec.AgeMS > maxDuration.Milliseconds() || rec.SinceMS < 0 {
		return shareRecord{}, fmt.Errorf("%w: age_ms %d or since_ms %d out of range", errBadRecord, rec.AgeMS, rec.SinceMS)
	}
	if len(rec.Remote) > maxAddr || !isPrintable(rec.Remote) {
		return shareRecord{}, fmt.Errorf("%w: remote: want at most %d printable bytes", errBadRecord, maxAddr)
	}
	if rec.Relay != nil {
		rec.Relay.BrokerURL = ""
		if err := rec.Relay.validate(); err != nil {
			return shareRecord{}, fmt.Errorf("%w: %v", errBadRecord, err)
		}
		if !strings.HasPrefix(rec.Relay.ID, relayIDPrefix) {
			return shareRecord{}, fmt.Errorf("%w: relay id %q lacks %q", errBadRecord, clip(rec.Relay.ID), relayIDPrefix)
		}
	}
	return rec, nil
}

// sharedNodeOf is rec of core as the registry lists it, last seen at
// lastSeen (of this core's clock).
func sharedNodeOf(core string, rec shareRecord, lastSeen time.Time) sharedNode {
	n := sharedNode{
		core: core,
		info: NodeInfo{
			ID: rec.Hello.NodeID, Region: rec.Hello.Region, Version: rec.Hello.Version,
			Addrs: rec.Hello.Addrs, Capacity: rec.Hello.Capacity, Load: rec.Load,
			Remote: rec.Remote, Since: time.UnixMilli(rec.SinceMS), LastSeen: lastSeen,
		},
		reported: rec.Reported,
	}
	if rec.Relay != nil {
		n.relay = *rec.Relay
	}
	return n
}
