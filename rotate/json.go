package rotate

import (
	"encoding/json"
	"time"
)

// Every duration in keyrotate's JSON is a number of seconds in a field
// whose name ends in _seconds (the run record's convention), and every
// timestamp RFC 3339. The results keep time.Duration for Go callers; these
// methods add the _seconds fields.

// seconds is a duration as JSON shows it; omitted when zero.
func seconds(d time.Duration) *float64 {
	if d == 0 {
		return nil
	}
	s := d.Seconds()
	return &s
}

// MarshalJSON adds age_seconds.
func (s SlotStatus) MarshalJSON() ([]byte, error) {
	type plain SlotStatus
	return json.Marshal(struct {
		plain
		AgeSeconds *float64 `json:"age_seconds,omitempty"`
	}{plain(s), seconds(s.Age)})
}

// MarshalJSON adds rotation_period_seconds.
func (s Schedule) MarshalJSON() ([]byte, error) {
	type plain Schedule
	return json.Marshal(struct {
		plain
		PeriodSeconds *float64 `json:"rotation_period_seconds,omitempty"`
	}{plain(s), seconds(s.Period)})
}

// MarshalJSON adds revocation_seconds.
func (f Finalized) MarshalJSON() ([]byte, error) {
	type plain Finalized
	return json.Marshal(struct {
		plain
		RevocationSeconds *float64 `json:"revocation_seconds,omitempty"`
	}{plain(f), seconds(f.Revocation)})
}

// MarshalJSON adds propagation_seconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		PropagationSeconds *float64 `json:"propagation_seconds,omitempty"`
	}{plain(r), seconds(r.Propagation)})
}
