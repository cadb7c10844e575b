package rotate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyrotate/keyrotate/internal/errhint"
)

// Schedule is a rotation schedule on a slot's secret, as Secret Manager
// keeps it: at Next it publishes SECRET_ROTATE to each of Topics, then
// every Period (Secret.rotation and Secret.topics).
type Schedule struct {
	Next   time.Time     `json:"next_rotation_time,omitzero"`
	Period time.Duration `json:"-"` // JSON: rotation_period_seconds (json.go)
	Topics []string      `json:"topics"`
}

// The update mask paths of a schedule's fields, as gcloud sends them.
const (
	PathTopics = "topics"
	PathNext   = "rotation.next_rotation_time"
	PathPeriod = "rotation.rotation_period"
)

// ScheduleLead is how far ahead Schedule sets the next rotation of a key
// that is due already (or nearly): Secret Manager refuses a
// next_rotation_time less than five minutes away; twice that leaves room
// for clocks that disagree.
const ScheduleLead = 10 * time.Minute

// ScheduleChange is what Schedule found on a slot's secret and what the
// slot's settings want there.
type ScheduleChange struct {
	Slot   string `json:"slot"`
	Secret string `json:"secret"`
	// Topic is the slot's schedule topic, added to the secret's topics
	// (the others are kept).
	Topic   string   `json:"topic"`
	Current Schedule `json:"current"`
	Wanted  Schedule `json:"wanted"`
	// Changes are the fields that differ, as update mask paths (PathTopics,
	// PathNext, PathPeriod); none: the secret carries the schedule already.
	Changes []string `json:"changes"`
	// Applied says the secret was updated.
	Applied bool `json:"applied"`

	// name and etag are the secret as read, for ApplySchedule's
	// compare-and-swap.
	name, etag string
}

// Schedule makes the rotation schedule on slot's secret match the slot:
// SECRET_ROTATE to slot.ScheduleTopic every slot.MaxAge, the next one when
// the current key reaches MaxAge (or ScheduleLead from now when it is due
// already). It keeps the secret's other topics and everything else on it,
// writing only the fields that differ, with a compare-and-swap on the etag
// it read; with apply false, or nothing to change, it writes nothing.
func (r *Rotator) Schedule(ctx context.Context, slot *Slot, apply bool) (*ScheduleChange, error) {
	if slot.ScheduleTopic == "" {
		return nil, errhint.With(fmt.Errorf("slot %s: no schedule topic", slot.Name),
			"name the Pub/Sub topic Secret Manager notifies when the slot is due (schedule_topic)")
	}
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, err
	}
	now := r.now()
	ch := &ScheduleChange{Slot: slot.Name, Secret: slot.Secret, Topic: slot.ScheduleTopic, Changes: []string{}}
	ch.Current = scheduleOf(pre.sec)
	ch.Wanted = Schedule{Period: slot.MaxAge, Topics: ch.Current.Topics}
	if !slices.Contains(ch.Wanted.Topics, slot.ScheduleTopic) {
		ch.Wanted.Topics = append(slices.Clone(ch.Current.Topics), slot.ScheduleTopic)
		ch.Changes = append(ch.Changes, PathTopics)
	}
	ch.Wanted.Next = nextRotation(pre, slot, ch.Current, now)
	if !ch.Wanted.Next.Equal(ch.Current.Next) {
		ch.Changes = append(ch.Changes, PathNext)
	}
	if ch.Wanted.Period != ch.Current.Period {
		ch.Changes = append(ch.Changes, PathPeriod)
	}
	ch.name, ch.etag = pre.sec.GetName(), pre.sec.GetEtag()
	if !apply {
		return ch, nil
	}
	return ch, r.ApplySchedule(ctx, ch)
}

// ApplySchedule writes the schedule ch (from Schedule) to its secret: only
// the fields that differ, with a compare-and-swap on the etag Schedule
// read, so a secret changed since is refused rather than overwritten.
// Nothing to change writes nothing.
func (r *Rotator) ApplySchedule(ctx context.Context, ch *ScheduleChange) error {
	if len(ch.Changes) == 0 || ch.Applied {
		return nil
	}
	_, sa := r.apis()
	in := &secretmanagerpb.Secret{
		Name: ch.name, Etag: ch.etag,
		Rotation: &secretmanagerpb.Rotation{
			NextRotationTime: timestamppb.New(ch.Wanted.Next),
			RotationPeriod:   durationpb.New(ch.Wanted.Period),
		},
	}
	for _, t := range ch.Wanted.Topics {
		in.Topics = append(in.Topics, &secretmanagerpb.Topic{Name: t})
	}
	if _, err := sa.Update(ctx, in, ch.Changes...); err != nil {
		return errhint.With(fmt.Errorf("slot %s: set the rotation schedule: %w", ch.Slot, err),
			"the topic must exist and Secret Manager's service agent (service-PROJECT_NUMBER@gcp-sa-secretmanager.iam.gserviceaccount.com) "+
				"needs roles/pubsub.publisher on it; if the secret changed meanwhile, run again")
	}
	ch.Applied = true
	return nil
}

// scheduleOf reads the schedule on a secret.
func scheduleOf(sec *secretmanagerpb.Secret) Schedule {
	s := Schedule{Topics: []string{}}
	for _, t := range sec.GetTopics() {
		s.Topics = append(s.Topics, t.GetName())
	}
	if r := sec.GetRotation(); r != nil {
		if r.NextRotationTime != nil {
			s.Next = r.GetNextRotationTime().AsTime().UTC()
		}
		if r.RotationPeriod != nil {
			s.Period = r.GetRotationPeriod().AsDuration()
		}
	}
	return s
}

// scheduleStatus returns the rotation schedule a secret carries, for
// Status; nil for none.
func scheduleStatus(sec *secretmanagerpb.Secret) *Schedule {
	s := scheduleOf(sec)
	if s.Next.IsZero() && s.Period == 0 {
		return nil
	}
	return &s
}

// nextRotation is when the slot's current key reaches its max age, in
// whole seconds; for a key due already (or within ScheduleLead), the
// current schedule's time when it is still to come within ScheduleLead
// (so that running again changes nothing), else ScheduleLead from now.
func nextRotation(pre *preflight, slot *Slot, cur Schedule, now time.Time) time.Time {
	soon := now.Add(ScheduleLead)
	due := pre.dueAt(slot).Truncate(time.Second)
	if pre.old != nil && !due.Before(soon) {
		return due
	}
	if cur.Next.After(now) && !cur.Next.After(soon) {
		return cur.Next
	}
	return soon.Add(time.Second - 1).Truncate(time.Second)
}
