// Command sightline-loadgen is the open-loop gRPC load generator of `python -m bench.serve`.
//
// It replays pre-serialized RecommendRequest messages (a file of big-endian uint32
// length-prefixed messages, as bench/serve.py writes them) at a constant rate: request i is
// due at start + i/rate, is sent at its due time whatever happened to the earlier ones, and
// its latency counts from that due time, so neither a client nor a server stall can hide by
// lowering the offered rate. A periodic timerfd wakes the dispatcher at each due time
// (within ~0.1 ms; see ticker_linux.go), which hands the call to an idle worker goroutine
// or starts a new one, never waiting for earlier calls. The calls go round-robin over
// -channels separate connections (the kernel spreads connections, not calls, over the
// server processes sharing a port with SO_REUSEPORT).
//
// CPU per call is what this exists for (it shares the cores with the server under test):
// one P (-procs 1), reused worker goroutines, static flow-control windows (no BDP pings)
// and no retry buffering. The summary line reports how late calls left (send lag).
//
// No generated code: a raw-bytes codec sends the request bytes as they are and drops the
// reply body; only the status counts. It writes
//
//	{"samples": [[due_epoch_seconds, latency_ms, ok], ...]}
//
// to -out (ok: the call returned status OK) and prints a one-line summary to stderr.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const defaultMethod = "/sightline.v1.RecommendationService/Recommend"

// rawCodec sends []byte values as they are and ignores what it receives. Its name is
// "proto" so the content type stays application/grpc+proto, which any server accepts.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch b := v.(type) {
	case []byte:
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	case *[]byte:
		return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T, want []byte", v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if p, ok := v.(*[]byte); ok && p != nil {
		*p = data.Materialize()
	}
	return nil // anything else (nil, *struct{}): the reply body is dropped
}

func (rawCodec) Name() string { return "proto" }

type config struct {
	target, method, requests, key, out string
	rate, seconds, timeout, connect    float64
	channels, procs                    int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sightline-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "", "server address host:port, e.g. 127.0.0.1:50051 (required)")
	fs.StringVar(&c.method, "method", defaultMethod, "full gRPC method name")
	fs.StringVar(&c.requests, "requests", "", "file of big-endian uint32 length-prefixed serialized requests (required)")
	fs.StringVar(&c.key, "key", "", "API key, sent as metadata x-api-key (none when empty)")
	fs.Float64Var(&c.rate, "rate", 0, "calls per second (required, > 0)")
	fs.Float64Var(&c.seconds, "seconds", 0, "how long to send (required, > 0); rate*seconds calls in all")
	fs.IntVar(&c.channels, "channels", 1, "separate connections; calls go round-robin over them")
	fs.Float64Var(&c.timeout, "timeout", 2, "per-call deadline in seconds")
	fs.Float64Var(&c.connect, "connect-timeout", 10, "seconds to wait for every connection to be READY")
	fs.StringVar(&c.out, "out", "", "where to write the JSON samples (required)")
	fs.IntVar(&c.procs, "procs", 1, "GOMAXPROCS: threads running Go code at once (0: one per core). One is plenty "+
		"for a few thousand calls/s and wakes fewer threads per call than two")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var bad []string
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if c.target == "" {
		bad = append(bad, "-target is required (e.g. -target 127.0.0.1:50051)")
	}
	if !strings.HasPrefix(c.method, "/") || strings.Count(c.method, "/") != 2 {
		bad = append(bad, fmt.Sprintf("-method %q is not /package.Service/Method", c.method))
	}
	if c.requests == "" {
		bad = append(bad, "-requests FILE is required")
	}
	if c.out == "" {
		bad = append(bad, "-out FILE is required")
	}
	if !(c.rate > 0) {
		bad = append(bad, "-rate must be > 0 calls/s")
	}
	if !(c.seconds > 0) {
		bad = append(bad, "-seconds must be > 0")
	}
	if c.rate > 0 && c.seconds > 0 && int(c.rate*c.seconds) < 1 {
		bad = append(bad, fmt.Sprintf("-rate %g × -seconds %g is less than one call", c.rate, c.seconds))
	}
	if c.channels < 1 {
		bad = append(bad, "-channels must be >= 1")
	}
	if !(c.timeout > 0) {
		bad = append(bad, "-timeout must be > 0 seconds")
	}
	if c.procs < 0 {
		bad = append(bad, "-procs must be >= 0")
	}
	if !(c.connect > 0) {
		bad = append(bad, "-connect-timeout must be > 0 seconds")
	}
	if len(bad) > 0 {
		return c, errors.New(strings.Join(bad, "; "))
	}
	return c, nil
}

// readRequests parses a file of big-endian uint32 length-prefixed messages.
func readRequests(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the request file: %w", err)
	}
	var out [][]byte
	for off := 0; off < len(data); {
		if len(data)-off < 4 {
			return nil, fmt.Errorf("%s: truncated length prefix at byte %d", path, off)
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return nil, fmt.Errorf("%s: record %d at byte %d claims %d bytes, %d left", path, len(out), off-4, n, len(data)-off)
		}
		out = append(out, data[off:off+n:off+n])
		off += n
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no requests", path)
	}
	return out, nil
}

// dial opens n separate connections and waits until every one is READY.
func dial(target string, n int, wait time.Duration) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := 0; i < n; i++ {
		c, err := grpc.NewClient(target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
			// Static flow-control windows: grpc-go's dynamic windows send a BDP ping after
			// nearly every reply at these rates (a round trip the server has to answer too).
			grpc.WithStaticStreamWindowSize(1<<20), grpc.WithStaticConnWindowSize(1<<20),
			grpc.WithDisableRetry())
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("bad -target %q: %w", target, err)
		}
		c.Connect()
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ready := 0
	for i, c := range conns {
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if s == connectivity.Idle {
				c.Connect()
			}
			if !c.WaitForStateChange(ctx, s) {
				closeAll()
				return nil, fmt.Errorf("connection %d of %d to %s was not READY after %s (state %s, %d ready): is the server running on %s?",
					i+1, n, target, wait, c.GetState(), ready, target)
			}
		}
		ready++
	}
	return conns, nil
}

type sample struct {
	due     time.Time // wall clock and monotonic reading of the due time
	latency time.Duration
	lag     time.Duration // how late the call was actually started
	code    codes.Code
}

// run sends rate*seconds calls on the open-loop schedule and returns one sample per call,
// in due order, once every call has finished (each is bounded by the per-call deadline).
func run(cfg config, conns []*grpc.ClientConn, requests [][]byte) ([]sample, error) {
	n := int(cfg.rate * cfg.seconds)
	samples := make([]sample, n)
	base := context.Background()
	if cfg.key != "" {
		base = metadata.NewOutgoingContext(base, metadata.Pairs("x-api-key", cfg.key))
	}
	timeout := time.Duration(cfg.timeout * float64(time.Second))
	period := float64(time.Second) / cfg.rate
	var wg sync.WaitGroup
	wg.Add(n)
	call := func(i int) {
		s := &samples[i]
		s.lag = time.Since(s.due)
		ctx, cancel := context.WithTimeout(base, timeout)
		var reply struct{}
		err := conns[i%len(conns)].Invoke(ctx, cfg.method, requests[i%len(requests)], &reply)
		s.latency = time.Since(s.due)
		cancel()
		s.code = status.Code(err)
		wg.Done()
	}
	// Calls run on reusable worker goroutines (their stacks stay grown: a fresh goroutine per
	// call spent ~5 % of the client's CPU growing its stack). The dispatcher never waits for
	// one: when no worker is idle it starts another, so every call leaves at its due time.
	work := make(chan int)
	worker := func(i int) {
		call(i)
		for i := range work {
			call(i)
		}
	}
	defer close(work)
	start := time.Now().Add(50 * time.Millisecond)
	for i := range samples {
		samples[i].due = start.Add(time.Duration(float64(i) * period))
	}
	// Tick k is due call k; the tick period is whole nanoseconds, so tick k may come up to
	// k × 1 ns before call k's due time (1 µs after 3,000 calls at 300/s).
	tick, err := newTicker(start, time.Duration(period))
	if err != nil {
		wg.Add(-n)
		return nil, err
	}
	defer tick.close()
	for i := 0; i < n; {
		k, err := tick.wait()
		if err != nil {
			wg.Add(i - n) // the calls never sent
			wg.Wait()
			return nil, fmt.Errorf("the send clock failed after %d calls: %w", i, err)
		}
		for end := min(i+k, n); i < end; i++ {
			select {
			case work <- i:
			default:
				go worker(i)
			}
		}
	}
	wg.Wait()
	return samples, nil
}

func writeSamples(path string, samples []sample) error {
	b := make([]byte, 0, 16+40*len(samples))
	b = append(b, `{"samples": [`...)
	for i, s := range samples {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '[')
		b = strconv.AppendFloat(b, float64(s.due.UnixNano())/1e9, 'f', 6, 64)
		b = append(b, ", "...)
		b = strconv.AppendFloat(b, float64(s.latency)/float64(time.Millisecond), 'f', 4, 64)
		b = append(b, ", "...)
		b = strconv.AppendBool(b, s.code == codes.OK)
		b = append(b, ']')
	}
	b = append(b, "]}\n"...)
	return os.WriteFile(path, b, 0o644)
}

func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func summary(cfg config, samples []sample) string {
	var okLat, lags []float64
	errs := map[codes.Code]int{}
	for _, s := range samples {
		lags = append(lags, float64(s.lag)/float64(time.Millisecond))
		if s.code == codes.OK {
			okLat = append(okLat, float64(s.latency)/float64(time.Millisecond))
		} else {
			errs[s.code]++
		}
	}
	sort.Float64s(okLat)
	sort.Float64s(lags)
	var e []string
	for c, k := range errs {
		e = append(e, fmt.Sprintf("%s %d", c, k))
	}
	sort.Strings(e)
	es := "none"
	if len(e) > 0 {
		es = strings.Join(e, ", ")
	}
	return fmt.Sprintf("sightline-loadgen: %s at %g calls/s for %g s over %d connections: sent %d, ok %d, errors: %s; "+
		"ok latency p50 %.2f ms, p99 %.2f ms; send lag after the due time p50 %.3f ms, p99 %.3f ms",
		cfg.target, cfg.rate, cfg.seconds, cfg.channels, len(samples), len(okLat), es,
		pct(okLat, 0.50), pct(okLat, 0.99), pct(lags, 0.50), pct(lags, 0.99))
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "sightline-loadgen: %v (see -h)\n", err)
		os.Exit(2)
	}
	if cfg.procs > 0 {
		runtime.GOMAXPROCS(cfg.procs)
	}
	debug.SetGCPercent(400) // a few KB of garbage per call; collect less often
	requests, err := readRequests(cfg.requests)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sightline-loadgen: %v\n", err)
		os.Exit(2)
	}
	conns, err := dial(cfg.target, cfg.channels, time.Duration(cfg.connect*float64(time.Second)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sightline-loadgen: %v\n", err)
		os.Exit(1)
	}
	samples, err := run(cfg, conns, requests)
	for _, c := range conns {
		c.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sightline-loadgen: %v\n", err)
		os.Exit(1)
	}
	if err := writeSamples(cfg.out, samples); err != nil {
		fmt.Fprintf(os.Stderr, "sightline-loadgen: cannot write -out: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, summary(cfg, samples))
}
