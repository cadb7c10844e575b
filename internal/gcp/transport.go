package gcp

import "net/http"

// EmulatorTransport returns a transport for the REST calls to keyrotate's
// emulator (an *_EMULATOR_HOST address, plain http://): cleartext HTTP/2
// with prior knowledge, which the emulator serves on its REST ports beside
// HTTP/1.1.
//
// Google's endpoints are reached over TLS, where Go's transports negotiate
// HTTP/2: concurrent calls are streams of a few shared connections. Over
// plain http:// Go's default transport speaks HTTP/1.1 instead: a
// connection with two goroutines and 8 KiB of buffers per call in flight,
// and, keeping two idle connections per host, a new connection for nearly
// every call of a fleet run. A run against the emulator would then cost
// memory and CPU that the same run against Google does not.
func EmulatorTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}
