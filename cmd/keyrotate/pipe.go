package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Output must never stop the protocol: `keyrotate rotate --now | head -1`
// closes stdout after one line, and a process killed by SIGPIPE there
// would leave its slot locked part-way. So SIGPIPE is received (not
// ignored: an ignored signal stays ignored in the programs keyrotate
// starts, a handled one is reset to the default for them), which makes a
// write to a closed pipe fail with EPIPE instead of killing the process
// (os/signal, "SIGPIPE"); and stdout is a sink that absorbs that failure.
// The run goes on to its end or to a safe stop, releases its lease, and
// its exit code says what happened to the keys.

// receiveSIGPIPE turns SIGPIPE into EPIPE errors from write.
func receiveSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

// sink writes to w until a write fails, then drops what follows; it never
// returns an error, so that no command fails for its output alone.
type sink struct {
	mu  sync.Mutex
	w   io.Writer
	err error // the first write error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		if _, err := s.w.Write(p); err != nil {
			s.err = err
		}
	}
	return len(p), nil
}

// warn tells stderr that output was lost, if it was.
func (s *sink) warn(stderr io.Writer, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		fmt.Fprintf(stderr, "keyrotate: warning: %s could not be written (%v): the output is cut short; "+
			"the run itself went on to its end, and the exit status says how it ended\n", name, s.err)
	}
}
