// Go's goroutines as the green-task peer: a hand-off over unbuffered
// channels (two switches per round trip), spawn+join of an empty goroutine
// (sync.WaitGroup), and the memory of a sleeping goroutine; RESULT lines
// for bench/run green. GOMAXPROCS=1, as the other loops run on one thread.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

const switches = 2000000
const spawns = 200000
const sleepers = 20000

func report(workload, impl string, value float64, unit string) {
	fmt.Printf("RESULT workload=%s impl=%s value=%.3f unit=%s\n", workload, impl, value, unit)
}

func rss() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.Atoi(f[1])
	return float64(pages * os.Getpagesize())
}

func main() {
	runtime.GOMAXPROCS(1)
	// Memory first, before anything else has grown the heap.
	runtime.GC()
	before := rss()
	for i := 0; i < sleepers; i++ {
		go func() { time.Sleep(time.Hour) }()
	}
	time.Sleep(500 * time.Millisecond)
	report("green_sleeper_mem", "Go", (rss()-before)/sleepers, "bytes/task")
	ping, pong := make(chan struct{}), make(chan struct{})
	go func() {
		for range ping {
			pong <- struct{}{}
		}
	}()
	for i := 0; i < 10000; i++ {
		ping <- struct{}{}
		<-pong
	}
	t0 := time.Now()
	for i := 0; i < switches/2; i++ {
		ping <- struct{}{}
		<-pong
	}
	report("green_switch", "Go", float64(time.Since(t0).Nanoseconds())/switches, "ns/switch")

	var t1 time.Time
	for round := 0; round < 2; round++ {
		t1 = time.Now()
		var wg sync.WaitGroup
		wg.Add(spawns)
		for i := 0; i < spawns; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	report("green_spawn_join", "Go", float64(time.Since(t1).Nanoseconds())/spawns, "ns/task")

}
