// A sender built on fluent-logger-golang, the library Docker's fluentd log
// driver links, sending records shaped exactly as the driver builds them
// (moby daemon/logger/fluentd): one PostWithTime per line, a map of strings
// with container_id, container_name (leading "/"), source and log, and for
// a line longer than 16 KiB the partial_* fields Docker adds.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o fluent_sender main.go
// (Debian: golang-go golang-github-fluent-fluent-logger-golang-dev).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

// Docker splits lines at 16 KiB (daemon/logger/copier.go bufSize).
const partialSize = 16 * 1024

func line(n int) string {
	return fmt.Sprintf("Nov 24 13:49:59 mail postfix/smtpd[%d]: connect from unknown[203.0.113.%d] msg %d", 1000+n%1000, n%250, n)
}

func main() {
	network := flag.String("network", "tcp", "tcp or unix")
	addr := flag.String("addr", "127.0.0.1:24224", "host:port, or the socket path")
	start := flag.Int("start", 0, "first line number")
	count := flag.Int("n", 1, "lines")
	ack := flag.Bool("ack", false, "fluentd-request-ack")
	subsecond := flag.Bool("subsecond", false, "fluentd-sub-second-precision")
	async := flag.Bool("async", false, "fluentd-async")
	retryWait := flag.Int("retry-wait-ms", 1000, "fluentd-retry-wait")
	delay := flag.Duration("delay", 0, "pause between lines")
	container := flag.String("container", "mailcowdockerized-postfix-mailcow-1", "container name")
	long := flag.Int("long", 0, "send one line of this many bytes instead, split as Docker splits it")
	flag.Parse()

	config := fluent.Config{
		FluentNetwork:      *network,
		BufferLimit:        1024 * 1024,
		RetryWait:          *retryWait,
		MaxRetry:           1 << 30,
		Async:              *async,
		ForceStopAsyncSend: *async,
		SubSecondPrecision: *subsecond,
		RequestAck:         *ack,
	}
	if *network == "unix" {
		config.FluentSocketPath = *addr
	} else {
		host, port, found := strings.Cut(*addr, ":")
		if !found {
			fmt.Fprintln(os.Stderr, "addr must be host:port")
			os.Exit(2)
		}
		config.FluentHost = host
		config.FluentPort, _ = strconv.Atoi(port)
	}
	logger, err := fluent.New(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fluent.New:", err)
		os.Exit(1)
	}
	const containerID = "4f9a1c0d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a"
	tag := containerID[:12]
	// The time the tests' GELF sender uses, so both paths store the same.
	when := time.Unix(1712345678, 123000000)
	record := func(log string) map[string]string {
		return map[string]string{
			"container_id":   containerID,
			"container_name": "/" + *container,
			"source":         "stdout",
			"log":            log,
		}
	}
	post := func(data map[string]string) {
		if err := logger.PostWithTime(tag, when, data); err != nil {
			fmt.Fprintln(os.Stderr, "PostWithTime:", err)
			os.Exit(1)
		}
	}
	if *long > 0 {
		text := "Nov 24 13:49:59 mail postfix/smtpd[1]: long "
		text += strings.Repeat("x", *long-len(text))
		parts := (len(text) + partialSize - 1) / partialSize
		for i := 0; i < parts; i++ {
			end := (i + 1) * partialSize
			if end > len(text) {
				end = len(text)
			}
			data := record(text[i*partialSize : end])
			data["partial_message"] = "true"
			data["partial_id"] = "8d2b1f0e6c5a4b3c2d1e0f9a8b7c6d5e"
			data["partial_ordinal"] = strconv.Itoa(i + 1)
			data["partial_last"] = strconv.FormatBool(i == parts-1)
			post(data)
		}
	} else {
		for n := *start; n < *start+*count; n++ {
			post(record(line(n)))
			if *delay > 0 {
				time.Sleep(*delay)
			}
		}
	}
	if err := logger.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "Close:", err)
		os.Exit(1)
	}
}
