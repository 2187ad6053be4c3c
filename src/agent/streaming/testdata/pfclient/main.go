// Port-forward client as client-go's portforward does it, over moby/spdystream.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/moby/spdystream"
)

func must(err error) {
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}

func main() {
	addr, certFile, keyFile, port, dead := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	must(err)
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	must(err)
	fmt.Fprintf(conn, "POST /portForward/ns/pod HTTP/1.1\r\nHost: node1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
	br := bufio.NewReaderSize(conn, 1)
	resp, err := http.ReadResponse(br, nil)
	must(err)
	if resp.StatusCode != 101 || resp.Header.Get("X-Stream-Protocol-Version") != "portforward.k8s.io" {
		must(fmt.Errorf("bad upgrade: %v %v", resp.Status, resp.Header))
	}
	sc, err := spdystream.NewConnection(conn, false)
	must(err)
	go sc.Serve(spdystream.NoOpStreamHandler)

	for req := 0; req < 3; req++ {
		h := http.Header{}
		h.Set("streamType", "error")
		h.Set("port", port)
		h.Set("requestID", fmt.Sprint(req))
		errStream, err := sc.CreateStream(h, nil, false)
		must(err)
		must(errStream.WaitTimeout(5 * time.Second))
		errStream.Close()
		h.Set("streamType", "data")
		data, err := sc.CreateStream(h, nil, false)
		must(err)
		must(data.WaitTimeout(5 * time.Second))
		payload := make([]byte, 1<<20+req)
		rand.Read(payload)
		go func() {
			_, err := data.Write(payload)
			must(err)
			data.Close()
		}()
		got, err := io.ReadAll(data)
		must(err)
		if !bytes.Equal(got, payload) {
			must(fmt.Errorf("request %d: echoed %d bytes, want %d", req, len(got), len(payload)))
		}
		msg, err := io.ReadAll(errStream)
		must(err)
		if len(msg) != 0 {
			must(fmt.Errorf("unexpected error: %s", msg))
		}
		data.Reset()
		errStream.Reset()
	}
	// A refused connection reports on the error stream.
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", dead)
	h.Set("requestID", "99")
	errStream, err := sc.CreateStream(h, nil, false)
	must(err)
	errStream.Close()
	h.Set("streamType", "data")
	data, err := sc.CreateStream(h, nil, false)
	must(err)
	msg, err := io.ReadAll(errStream)
	must(err)
	fmt.Println("error stream:", string(msg))
	data.Close()
	// Ping round trip.
	_, err = sc.Ping()
	must(err)
	sc.Close()
	fmt.Println("OK")
}
