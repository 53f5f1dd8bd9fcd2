package grpcserver

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	gproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// codec is grpc's proto codec, except that Unmarshal records a message
// that does not decode in bad instead of failing (see the package doc).
type codec struct {
	encoding.CodecV2
	// bad holds, by message, the INVALID_ARGUMENT status of a request
	// that did not decode, from Unmarshal until an interceptor takes it.
	bad sync.Map
}

func newCodec() *codec {
	return &codec{CodecV2: encoding.GetCodecV2(gproto.Name)}
}

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	// Left half decoded, the message must not be mistaken for a request.
	proto.Reset(m)
	c.bad.Store(v, status.New(codes.InvalidArgument, decodeProblem(m.ProtoReflect().Descriptor(), data.Materialize(), err)))
	return nil
}

// take returns the refusal recorded for v, if any, and forgets it.
func (c *codec) take(v any) error {
	if st, ok := c.bad.LoadAndDelete(v); ok {
		return st.(*status.Status).Err()
	}
	return nil
}

func (c *codec) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.take(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *codec) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &checkedStream{ServerStream: ss, c: c})
}

// checkedStream refuses a received message that did not decode.
type checkedStream struct {
	grpc.ServerStream
	c *codec
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.c.take(m)
}

// decodeProblem says why data does not decode as a message of md: the
// first string field that is not UTF-8, by its path, or else the
// decoder's error.
func decodeProblem(md protoreflect.MessageDescriptor, data []byte, err error) string {
	if path := invalidUTF8(md, data, ""); path != "" {
		return "request is malformed: " + path + " is not valid UTF-8"
	}
	return fmt.Sprintf("request is malformed: it does not decode as %s: %v", md.FullName(), err)
}

// invalidUTF8 returns the path (events[3].ad_id) of the first string field
// in data that is not valid UTF-8, or "". It stops at anything it cannot
// parse: the decoder's own error then says what is wrong.
func invalidUTF8(md protoreflect.MessageDescriptor, data []byte, prefix string) string {
	seen := map[protowire.Number]int{}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return ""
		}
		data = data[n:]
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return ""
		}
		value := data[:n]
		data = data[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			continue
		}
		path := prefix + string(fd.Name())
		if fd.Cardinality() == protoreflect.Repeated {
			path += "[" + strconv.Itoa(seen[num]) + "]"
			seen[num]++
		}
		b, _ := protowire.ConsumeBytes(value)
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(b):
			return path
		case fd.Message() != nil && !fd.IsMap():
			if p := invalidUTF8(fd.Message(), b, path+"."); p != "" {
				return p
			}
		}
	}
	return ""
}
