package main

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func writeRequestFile(t *testing.T, msgs ...string) string {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	p := filepath.Join(t.TempDir(), "requests.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadRequests(t *testing.T) {
	got, err := readRequests(writeRequestFile(t, "a", "", "hello"))
	if err != nil || len(got) != 3 || string(got[0]) != "a" || len(got[1]) != 0 || string(got[2]) != "hello" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := readRequests(writeRequestFile(t)); err == nil || !strings.Contains(err.Error(), "no requests") {
		t.Fatalf("empty file: %v", err)
	}
	p := writeRequestFile(t, "hello")
	os.WriteFile(p, []byte{0, 0, 0, 9, 'x'}, 0o644)
	if _, err := readRequests(p); err == nil || !strings.Contains(err.Error(), "claims 9 bytes") {
		t.Fatalf("truncated file: %v", err)
	}
	if _, err := readRequests(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file read")
	}
}

func TestParseFlags(t *testing.T) {
	if _, err := parseFlags([]string{"-target", "x:1", "-requests", "r", "-out", "o", "-rate", "10", "-seconds", "1"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	_, err := parseFlags([]string{"-rate", "0", "-channels", "0"}, io.Discard)
	for _, want := range []string{"-target", "-requests", "-out", "-rate", "-seconds", "-channels"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v does not name %s", err, want)
		}
	}
}

// An in-process server that answers any method: OK with the request bytes when the
// x-api-key is "good", UNAUTHENTICATED otherwise.
func startServer(t *testing.T) (string, *sync.Map) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := &sync.Map{}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var req []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		method, _ := grpc.MethodFromServerStream(stream)
		seen.Store(method+" "+string(req), true)
		md, _ := metadata.FromIncomingContext(stream.Context())
		if k := md.Get("x-api-key"); len(k) != 1 || k[0] != "good" {
			return status.Error(codes.Unauthenticated, "bad key")
		}
		return stream.SendMsg(req)
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), seen
}

func TestOpenLoopAgainstAServer(t *testing.T) {
	addr, seen := startServer(t)
	conns, err := dial(addr, 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	cfg := config{target: addr, method: "/x.Y/Z", key: "good", rate: 100, seconds: 0.3, timeout: 2, channels: 3}
	samples, err := run(cfg, conns, [][]byte{[]byte("r0"), []byte("r1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 30 {
		t.Fatalf("%d samples, want 30", len(samples))
	}
	for i, s := range samples {
		if s.code != codes.OK || s.latency <= 0 {
			t.Fatalf("sample %d: %+v", i, s)
		}
		if i > 0 {
			if gap := s.due.Sub(samples[i-1].due); gap < 9*time.Millisecond || gap > 11*time.Millisecond {
				t.Fatalf("due gap %s at %d", gap, i)
			}
		}
	}
	for _, k := range []string{"/x.Y/Z r0", "/x.Y/Z r1"} {
		if _, ok := seen.Load(k); !ok {
			t.Fatalf("the server never saw %q", k)
		}
	}
	out := filepath.Join(t.TempDir(), "out.json")
	if err := writeSamples(out, samples); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Samples [][3]any }
	raw, _ := os.ReadFile(out)
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Samples) != 30 || doc.Samples[0][2] != true {
		t.Fatalf("%v: %s", err, raw[:80])
	}

	cfg.key = "bad"
	bad, err := run(cfg, conns, [][]byte{[]byte("r0")})
	if err != nil || len(bad) != 30 {
		t.Fatalf("%d samples, %v", len(bad), err)
	}
	for _, s := range bad {
		if s.code != codes.Unauthenticated {
			t.Fatalf("bad key gave %s", s.code)
		}
	}
}

func TestDialNamesTheServer(t *testing.T) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	_, err := dial(addr, 2, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "is the server running on "+addr) {
		t.Fatalf("%v", err)
	}
}
