//go:build !linux

package main

import "time"

// ticker without timerfd: time.Sleep to each tick (may wake up to ~1 ms late when idle).
type ticker struct {
	next   time.Time
	period time.Duration
}

func newTicker(first time.Time, period time.Duration) (*ticker, error) {
	return &ticker{next: first, period: period}, nil
}

func (t *ticker) wait() (int, error) {
	time.Sleep(time.Until(t.next))
	k := 0
	for now := time.Now(); !t.next.After(now); t.next = t.next.Add(t.period) {
		k++
	}
	return k, nil
}

func (t *ticker) close() {}
