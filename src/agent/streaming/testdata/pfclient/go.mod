module pfclient

go 1.19

require github.com/moby/spdystream v0.0.0

// Point at a checkout of github.com/moby/spdystream (stdlib only), then:
//   GOFLAGS=-mod=mod GOPROXY=off go build -o /tmp/pfclient .
replace github.com/moby/spdystream => ../../../../../../spdystream
