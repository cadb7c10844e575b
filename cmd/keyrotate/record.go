package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// runRecord is what --report writes and the webhook summarises: one run,
// every slot it took, what happened to each, with key names and
// fingerprints (never key strings), timings, API calls and errors.
type runRecord struct {
	Version  int       `json:"version"` // of this format: 1
	Run      string    `json:"run"`     // this run's id, also in the log labels
	Command  string    `json:"command"`
	Config   string    `json:"config"`
	Shard    string    `json:"shard,omitempty"` // i/n when sharded
	Host     string    `json:"host"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"seconds"`
	ExitCode int       `json:"exit_code"`
	// Error is set when the run failed as a whole (bad config, no
	// credentials) or names the failed slots.
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`

	Summary runSummary `json:"summary"`
	// APICalls counts the calls made, by method; Throttled how many were
	// answered 429; QuotaWaits how many waited for quota, QuotaWaitSeconds
	// how long in all.
	APICalls         map[string]int64 `json:"api_calls"`
	APICallsTotal    int64            `json:"api_calls_total"`
	Throttled        int64            `json:"throttled"`
	QuotaWaits       int64            `json:"quota_waits"`
	QuotaWaitSeconds float64          `json:"quota_wait_seconds"`

	Slots []slotRecord `json:"slots"`
	// Leak is the leaked key of rotate --leaked: where it was held and
	// the traffic that broke with it.
	Leak *rotate.Leak `json:"leak,omitempty"`

	meter *gcp.Meter
	order map[string]int // slot -> place in the config, for Slots' order
}

type runSummary struct {
	Slots     int `json:"slots"`
	Rotated   int `json:"rotated"`               // rotations completed (new key everywhere)
	Resumed   int `json:"resumed"`               // of which resumed an earlier run's rotation
	Finalized int `json:"finalized_keys"`        // old keys whose grace ended, deleted first
	NotDue    int `json:"nothing_to_do"`         // not due, or just rotated
	Failed    int `json:"failed"`                // ended with an error
	Pending   int `json:"in_progress_elsewhere"` // held by another run's lease (part of Failed)
}

// slotRecord is one slot of a run.
type slotRecord struct {
	Slot    string `json:"slot"`
	Project string `json:"project"`
	// Action is rotated, resumed, nothing-to-do or failed.
	Action             string                `json:"action"`
	Reason             string                `json:"reason,omitempty"`
	RotationID         string                `json:"rotation_id,omitempty"`
	OldKey             *rotate.KeyRef        `json:"old_key,omitempty"`
	NewKey             *rotate.KeyRef        `json:"new_key,omitempty"`
	NewVersion         string                `json:"new_version,omitempty"`
	Retired            string                `json:"retired,omitempty"`
	DeleteAfter        *time.Time            `json:"delete_after,omitempty"`
	Targets            []rotate.TargetResult `json:"targets,omitempty"`
	Finalized          []rotate.Finalized    `json:"finalized,omitempty"`
	Started            time.Time             `json:"started"`
	Finished           time.Time             `json:"finished"`
	Seconds            float64               `json:"seconds"`
	PropagationSeconds float64               `json:"propagation_seconds,omitempty"`
	APICalls           int64                 `json:"api_calls"`
	Throttled          int64                 `json:"throttled,omitempty"`
	Error              string                `json:"error,omitempty"`
	Hint               string                `json:"hint,omitempty"`
	ExitCode           int                   `json:"exit_code"`
}

func newRunRecord(c *cli.Context, command, cfgPath string) *runRecord {
	host, _ := os.Hostname()
	return &runRecord{Version: 1, Run: runID(c), Command: command, Config: cfgPath, Host: host,
		Started: time.Now().UTC(), APICalls: map[string]int64{}, Slots: []slotRecord{}}
}

// runID returns the id of this process's run, made once (rotate.NewID,
// e.g. 20261130041502-3kq7zx2m). It is the one id of the run everywhere:
// the log labels, the run record, the lease holder, and the id of every
// rotation the run starts (a resumed rotation keeps its first run's id).
func runID(c *cli.Context) string {
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	if id, ok := c.App.Metadata["run"].(string); ok {
		return id
	}
	id := rotate.NewID(time.Now())
	c.App.Metadata["run"] = id
	return id
}

// start notes what the job selected.
func (r *runRecord) start(j *job) {
	r.meter = j.meter
	if !j.shard.all() {
		r.Shard = j.shard.String()
	}
	r.Summary.Slots = len(j.slots)
	r.order = map[string]int{}
	for i, s := range j.slots {
		r.order[s.Name] = i
	}
}

// add records one slot's outcome.
func (r *runRecord) add(o rotate.Outcome) {
	s := slotRecord{Slot: o.Slot.Name, Project: o.Slot.Project, Started: o.Started.UTC(), Finished: o.Finished.UTC(),
		Seconds: o.Finished.Sub(o.Started).Seconds(), APICalls: o.Calls, Throttled: o.Throttled}
	if o.Err != nil {
		s.Action, s.Error, s.Hint, s.ExitCode = "failed", o.Err.Error(), hintOf(o.Err), exitCode(o.Err)
		r.Summary.Failed++
		if isInProgress(o.Err) {
			r.Summary.Pending++
		}
		r.Slots = append(r.Slots, s)
		return
	}
	res := o.Result
	s.Finalized = res.Finalized
	r.Summary.Finalized += len(res.Finalized)
	if res.OldKey.Name != "" {
		s.OldKey = &res.OldKey
	}
	switch {
	case !res.Rotated:
		s.Action, s.Reason = "nothing-to-do", res.Reason
		r.Summary.NotDue++
	default:
		s.Action = "rotated"
		if res.Resumed {
			s.Action = "resumed"
			r.Summary.Resumed++
		}
		r.Summary.Rotated++
		s.RotationID, s.NewKey, s.NewVersion = res.RotationID, &res.NewKey, res.NewVersion
		s.Retired, s.DeleteAfter, s.Targets = res.Retired, res.DeleteAfter, res.Targets
		s.PropagationSeconds = res.Propagation.Seconds()
	}
	r.Slots = append(r.Slots, s)
}

// finish closes the record with the run's error (nil: success).
func (r *runRecord) finish(err error) {
	slices.SortStableFunc(r.Slots, func(a, b slotRecord) int { return r.order[a.Slot] - r.order[b.Slot] })
	r.Finished = time.Now().UTC()
	r.Seconds = r.Finished.Sub(r.Started).Seconds()
	r.ExitCode = exitCode(err)
	if err != nil {
		r.Error, r.Hint = err.Error(), hintOf(err)
		if r.Summary.Failed > 0 {
			r.Error = fmt.Sprintf("%d of %d slots failed", r.Summary.Failed, r.Summary.Slots)
			r.Hint = ""
		}
	}
	if r.meter != nil {
		r.APICalls = r.meter.Calls()
		r.APICallsTotal, r.Throttled = r.meter.Total()
		n, d := r.meter.Pacer.Waits()
		r.QuotaWaits, r.QuotaWaitSeconds = n, d.Seconds()
	}
}

// write writes the record to path atomically (temp file, rename), so that
// a reader never sees half a record.
func (r *runRecord) write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// totals is the line that ends a rotate run for people, e.g. "totals: 3
// slots: 1 rotated (1 resumed), 1 nothing to do, 1 failed (1 in progress
// elsewhere); 2 old keys finalized; took 4.2s".
func (r *runRecord) totals() string {
	s := r.Summary
	var b strings.Builder
	fmt.Fprintf(&b, "totals: %d slot%s: %d rotated", s.Slots, plural(s.Slots), s.Rotated)
	if s.Resumed > 0 {
		fmt.Fprintf(&b, " (%d resumed)", s.Resumed)
	}
	fmt.Fprintf(&b, ", %d nothing to do, %d failed", s.NotDue, s.Failed)
	if s.Pending > 0 {
		fmt.Fprintf(&b, " (%d in progress elsewhere)", s.Pending)
	}
	if s.Finalized > 0 {
		fmt.Fprintf(&b, "; %d old key%s finalized", s.Finalized, plural(s.Finalized))
	}
	took := r.Finished.Sub(r.Started)
	if took >= time.Second {
		took = took.Round(100 * time.Millisecond)
	} else {
		took = took.Round(time.Millisecond)
	}
	fmt.Fprintf(&b, "; took %s (run %s)", took, r.Run)
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
