// Package gcp is Google's clients as keyrotate uses them: the few API Keys
// and Secret Manager calls the rotation protocol makes (Keys, Secrets,
// AccessVersion, AddVersion) and the Cloud Monitoring request counts that
// tell who uses each key (Usage), each retried under a RetryPolicy, and
// classified at the boundary into named errors (ErrKeyNotFound,
// ErrSecretNotFound, ConsumerError) with a hint naming the role or the API
// a denied call needs; the Meter and Pacer that count the calls and keep
// them within each project's quota, and every secret's writes within its
// rate; and the transports that log the calls without their key strings.
//
// It is internal because nothing outside this module should depend on it:
// it is shaped by what the rotate package, the targets and the command
// need, and changes with them.
package gcp
