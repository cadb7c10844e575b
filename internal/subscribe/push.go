package subscribe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/api/idtoken"
)

// Issuers of Google-signed ID tokens, as Pub/Sub's push tokens carry them
// (https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions:
// "iss" is accounts.google.com or https://accounts.google.com).
var googleIssuers = map[string]bool{"accounts.google.com": true, "https://accounts.google.com": true}

// Authenticator checks the OIDC token Pub/Sub attaches to each push
// (Authorization: Bearer): signed by Google, for Audience, not expired,
// issued by accounts.google.com to ServiceAccount with a verified email.
type Authenticator struct {
	validator      *idtoken.Validator
	audience       string
	serviceAccount string
}

// ErrUnauthenticated and ErrForbidden are the two ways a push is refused:
// no valid token (401), or a valid token of someone else (403).
var (
	ErrUnauthenticated = errors.New("no valid token")
	ErrForbidden       = errors.New("token not of the push service account")
)

// NewAuthenticator returns an Authenticator that checks tokens against
// Google's published keys.
func NewAuthenticator(ctx context.Context, audience, serviceAccount string) (*Authenticator, error) {
	v, err := idtoken.NewValidator(ctx)
	if err != nil {
		return nil, fmt.Errorf("token validator: %w", err)
	}
	return NewAuthenticatorWith(v, audience, serviceAccount)
}

// NewAuthenticatorWith is NewAuthenticator with a given validator: tests
// build one whose HTTP client serves their own signing keys. An empty
// audience or service account is refused: idtoken skips the audience
// check for an empty audience.
func NewAuthenticatorWith(v *idtoken.Validator, audience, serviceAccount string) (*Authenticator, error) {
	if v == nil || audience == "" || serviceAccount == "" {
		return nil, errors.New("a push authenticator needs a validator, an audience and a service account")
	}
	return &Authenticator{validator: v, audience: audience, serviceAccount: serviceAccount}, nil
}

// Check returns nil when r carries a valid token of the push service
// account, else an error wrapping ErrUnauthenticated or ErrForbidden. The
// error never holds the token.
func (a *Authenticator) Check(r *http.Request) error {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	p, err := a.validator.Validate(r.Context(), strings.TrimSpace(tok), a.audience)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrUnauthenticated, tokenProblem(err))
	}
	if !googleIssuers[p.Issuer] {
		return fmt.Errorf("%w: issuer %q is not Google's", ErrUnauthenticated, p.Issuer)
	}
	email, _ := p.Claims["email"].(string)
	verified, _ := p.Claims["email_verified"].(bool)
	if email != a.serviceAccount || !verified {
		return fmt.Errorf("%w: token of %q (email verified: %t), want %s", ErrForbidden, email, verified, a.serviceAccount)
	}
	return nil
}

// tokenProblem words a validation error without quoting the token.
func tokenProblem(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "audience"):
		return "wrong audience"
	case strings.Contains(s, "expired"):
		return "expired"
	}
	return "bad signature or format"
}

// pushBody is what Pub/Sub posts to a push endpoint (the wrapped format):
// https://cloud.google.com/pubsub/docs/push#receive_push.
type pushBody struct {
	Message struct {
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime time.Time         `json:"publishTime"`
	} `json:"message"`
	Subscription    string `json:"subscription"`
	DeliveryAttempt int    `json:"deliveryAttempt"`
}

// maxPushBody bounds a push request's body: a Secret as JSON is small
// (annotations < 16 KiB), and Pub/Sub's messages at most 10 MB.
const maxPushBody = 1 << 20

// Push serves a push subscription: POST / with a message, GET /healthz.
type Push struct {
	Handler *Handler
	Auth    *Authenticator
	Log     *slog.Logger
	// Stop, when set, ends the rotations of the pushes (the process
	// stopping). A push's rotation does not end when Pub/Sub stops waiting
	// for the answer (its ack deadline passed, the connection closed): it
	// runs to its end, and the delivery Pub/Sub makes meanwhile finds the
	// slot held, then the work done. Without Stop, the request's context
	// ends it.
	Stop context.Context
}

// ServeHTTP answers Pub/Sub: 204 to acknowledge, 503 to have the message
// delivered again, 401/403 to a request without the push service account's
// token (nothing is read or done), 400 to a body that is no push message
// (acknowledging it would drop it unread; Pub/Sub retries it, and a
// dead-letter topic ends that).
func (p *Push) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.URL.Path == "/healthz" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := p.Auth.Check(r); err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, ErrForbidden) {
			code = http.StatusForbidden
		}
		log.Warn("push refused", "error", err.Error(), "status", code, "remote", r.RemoteAddr)
		http.Error(w, http.StatusText(code), code)
		return
	}
	var body pushBody
	if err := json.NewDecoder(io.LimitReader(r.Body, maxPushBody)).Decode(&body); err != nil {
		log.Warn("push refused: not a Pub/Sub push message", "error", err.Error())
		http.Error(w, "not a Pub/Sub push message", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if p.Stop != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(context.WithoutCancel(ctx))
		stop := context.AfterFunc(p.Stop, func() { cancel(context.Cause(p.Stop)) })
		defer stop()
		defer cancel(nil)
	}
	o := p.Handler.Handle(ctx, Message{
		ID: body.Message.MessageID, Attributes: body.Message.Attributes,
		PublishTime: body.Message.PublishTime, DeliveryAttempt: body.DeliveryAttempt,
	})
	if o.Decision == Ack {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// The body says why in a few words: no error text, which names
	// resources a caller without access to the logs need not learn.
	http.Error(w, "not done, deliver again: "+o.Why, http.StatusServiceUnavailable)
}
