package main

import (
	"fmt"
	"strings"

	"github.com/keyrotate/keyrotate/rotate"
)

// usageMethods is how many methods a usage line names; the rest are
// counted ("and 2 more"), and --output json lists them all.
const usageMethods = 3

// usageLine renders who used a key, in one line: the calls of the last
// hour, 24 hours and 7 days (ok, and failed: a key used only by failing
// calls still has a caller), when last seen, and the most called methods.
func usageLine(u *rotate.KeyUsage) string {
	if u.LastWeek.Total() == 0 {
		return "no requests in 7 days"
	}
	var methods []string
	for i, m := range u.ByMethod {
		if i == usageMethods {
			methods = append(methods, fmt.Sprintf("and %d more", len(u.ByMethod)-usageMethods))
			break
		}
		methods = append(methods, shortService(m.Service)+" "+shortMethod(m.Method)+" "+requestsString(m.LastWeek))
	}
	return fmt.Sprintf("1h %s; 24h %s; 7d %s; last seen %s; by method (7d): %s",
		requestsString(u.LastHour), requestsString(u.LastDay), requestsString(u.LastWeek),
		lastSeen(u), strings.Join(methods, ", "))
}

// requestsString is "3 ok", "3 ok + 1 failed", "2 failed" or "none".
func requestsString(r rotate.Requests) string {
	switch {
	case r.Total() == 0:
		return "none"
	case r.Error == 0:
		return fmt.Sprintf("%d ok", r.OK)
	case r.OK == 0:
		return fmt.Sprintf("%d failed", r.Error)
	}
	return fmt.Sprintf("%d ok + %d failed", r.OK, r.Error)
}

// lastSeen says when the latest call was, to the hour the counts have.
func lastSeen(u *rotate.KeyUsage) string {
	ago := u.AsOf.Sub(u.LastSeen)
	switch {
	case ago < rotate.UsagePeriod:
		return "within the last hour"
	case ago < 48*rotate.UsagePeriod:
		h := int(ago / rotate.UsagePeriod)
		return fmt.Sprintf("%d-%dh ago", h, h+1)
	}
	return fmt.Sprintf("%dd ago", int(ago.Hours()/24))
}

// shortService drops .googleapis.com; shortMethod keeps the method of a
// full RPC name (google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent).
func shortService(s string) string { return strings.TrimSuffix(s, ".googleapis.com") }

func shortMethod(m string) string { return m[strings.LastIndexByte(m, '.')+1:] }
