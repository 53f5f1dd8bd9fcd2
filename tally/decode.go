package tally

import (
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrEntry: ApplyEncoded was given bytes that are not a valid
// clickaggv1.LogEntry.
var ErrEntry = errors.New("tally: malformed log entry")

// rawEvent is a LogEvent as ApplyEncoded decodes it: its strings alias the
// entry's bytes and live only during the call.
type rawEvent struct {
	eventID, adID, userID, ip, country string
	ms                                 int64
}

// Field numbers of clickaggv1.LogEntry and LogEvent
// (proto/clickagg/v1/log.proto); TestApplyEncodedMatchesApply keeps them
// true.
const (
	entryRouterID = 1
	entryEvents   = 2
	entryTick     = 3

	evEventID = 1
	evAdID    = 2
	evClickMs = 3
	evUserID  = 4
	evIP      = 5
	evCountry = 6
)

// ApplyEncoded is Apply of the entry whose wire form (clickaggv1.LogEntry)
// is data, without building the message: no event and no string is
// allocated, and nothing the state keeps refers to data (strings are
// interned as copies, the others hashed). It also appends the ad_id of
// each of the entry's events to ads, for the caller's heavy-hitter sketch;
// those strings alias data, so they are valid while data is not modified.
//
// Like proto.Unmarshal, it refuses (ErrEntry, and applies nothing) bytes
// that are not a valid encoding or hold invalid UTF-8 in a string field,
// and skips unknown fields and known fields of another wire type.
func (p *Partition) ApplyEncoded(id string, data []byte, ads []string) ([]string, error) {
	evs, tick, err := p.decode(data)
	if err != nil {
		return ads, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset = id
	for i := range evs {
		ev := &evs[i]
		p.applyFields(ev.eventID, ev.adID, ev.ms, ev.userID, ev.ip, ev.country)
		ads = append(ads, ev.adID)
	}
	if tick != 0 {
		if wm := subSat(tick, p.latenessMs); wm > p.watermark {
			p.watermark = wm
			p.advance()
		}
	}
	return ads, nil
}

// decode decodes a whole entry into p.decoded before anything is applied,
// so that a malformed entry changes nothing. Only the applying goroutine
// calls it.
func (p *Partition) decode(b []byte) ([]rawEvent, int64, error) {
	evs := p.decoded[:0]
	var tick int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("%w: %v", ErrEntry, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == entryRouterID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: router_id: %v", ErrEntry, protowire.ParseError(n))
			}
			if !utf8.Valid(v) {
				return nil, 0, fmt.Errorf("%w: router_id is not valid UTF-8", ErrEntry)
			}
			b = b[n:]
		case num == entryEvents && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: event %d: %v", ErrEntry, len(evs), protowire.ParseError(n))
			}
			ev, err := decodeEvent(v)
			if err != nil {
				return nil, 0, fmt.Errorf("%w: event %d: %v", ErrEntry, len(evs), err)
			}
			evs = append(evs, ev)
			b = b[n:]
		case num == entryTick && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: tick_ms: %v", ErrEntry, protowire.ParseError(n))
			}
			tick = int64(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, 0, fmt.Errorf("%w: field %d: %v", ErrEntry, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	p.decoded = evs[:0]
	return evs, tick, nil
}

func decodeEvent(b []byte) (rawEvent, error) {
	var ev rawEvent
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ev, protowire.ParseError(n)
		}
		b = b[n:]
		var s *string
		switch num {
		case evEventID:
			s = &ev.eventID
		case evAdID:
			s = &ev.adID
		case evUserID:
			s = &ev.userID
		case evIP:
			s = &ev.ip
		case evCountry:
			s = &ev.country
		}
		switch {
		case s != nil && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ev, protowire.ParseError(n)
			}
			if !utf8.Valid(v) {
				return ev, fmt.Errorf("field %d is not valid UTF-8", num)
			}
			*s = unsafe.String(unsafe.SliceData(v), len(v))
			b = b[n:]
		case num == evClickMs && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return ev, protowire.ParseError(n)
			}
			ev.ms = int64(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return ev, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return ev, nil
}
