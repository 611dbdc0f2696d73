package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ticker fires every period from its first tick on, through a periodic timerfd that the Go
// netpoller waits on: the kernel's hrtimer wakes the dispatcher within microseconds of a due
// time. A plain time.Sleep wakes up to ~1 ms late when the process is otherwise idle (the
// runtime's netpoll wait has millisecond resolution), and that lateness would be counted as
// server latency.
type ticker struct {
	f   *os.File
	buf [8]byte
}

func newTicker(first time.Time, period time.Duration) (*ticker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	delay := time.Until(first)
	if delay <= 0 {
		delay = time.Nanosecond // an all-zero it_value would disarm the timer
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(delay)), Interval: unix.NsecToTimespec(int64(period))}
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return &ticker{f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// wait blocks until the next tick and returns how many ticks passed since the last wait (>= 1).
func (t *ticker) wait() (int, error) {
	if _, err := t.f.Read(t.buf[:]); err != nil {
		return 0, err
	}
	return int(binary.NativeEndian.Uint64(t.buf[:])), nil
}

func (t *ticker) close() { t.f.Close() }
