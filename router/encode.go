package router

import "google.golang.org/protobuf/encoding/protowire"

// logEvent is a valid event in the form it is stored. Its strings are the
// request's own (or canonical spellings): nothing is copied until it is
// encoded.
type logEvent struct {
	eventID, adID string
	ms            int64
	userID, ip    string
	country       string
}

// Field numbers of clickaggv1.LogEntry and clickaggv1.LogEvent
// (proto/clickagg/v1/log.proto); TestEncodingMatchesProto keeps them true.
const (
	entryRouterID = 1
	entryEvents   = 2

	eventID      = 1
	eventAdID    = 2
	eventClickMs = 3
	eventUserID  = 4
	eventIP      = 5
	eventCountry = 6
)

// appendTo appends e as one element of LogEntry.events: the wire form of a
// repeated field is the concatenation of its elements, so the events of
// many requests join one entry by appending bytes, with no message built
// and no second pass to marshal it.
func (e *logEvent) appendTo(b []byte) []byte {
	size := sizeString(eventID, e.eventID) + sizeString(eventAdID, e.adID) +
		protowire.SizeTag(eventClickMs) + protowire.SizeVarint(uint64(e.ms)) +
		sizeString(eventUserID, e.userID) + sizeString(eventIP, e.ip) + sizeString(eventCountry, e.country)
	b = protowire.AppendTag(b, entryEvents, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = appendString(b, eventID, e.eventID)
	b = appendString(b, eventAdID, e.adID)
	b = protowire.AppendTag(b, eventClickMs, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.ms))
	b = appendString(b, eventUserID, e.userID)
	b = appendString(b, eventIP, e.ip)
	return appendString(b, eventCountry, e.country)
}

// appendRouterID appends LogEntry.router_id.
func appendRouterID(b []byte, id string) []byte {
	if id == "" {
		return b
	}
	return appendString(b, entryRouterID, id)
}

func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

// appendString appends a string field, or nothing for "" as proto3 does.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}
