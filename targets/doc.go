// Package targets implements rotate.Target for each kind of place that
// consumes an API key, one file per kind (its config type in parentheses):
// a variable in a .env file (DotEnv, dotenv), a further Secret Manager
// secret (SecretManager, secretmanager), a variable in the environment of
// docker compose services (Compose, compose), a command that takes the key
// on stdin (Exec, exec), a GitHub Actions secret (GitHub, github), a key of
// a Kubernetes Secret (K8s, k8s) and a variable of a Cloud Run service
// (CloudRun, cloudrun). DotEnv and Compose are local (rotate.Local); Exec
// and GitHub are write-only (their Read returns rotate.ErrUnreadable, and
// they confirm a write with rotate.Confirmer instead). K8s is a
// rotate.Confirmer too: its Read returns rotate.ErrUnreadable while a
// restart that a Write began has not finished.
//
// Every target gives the rotation the same guarantees:
//
//   - Read proves, without writing anything, that a later Write can succeed:
//     the target exists, holds exactly one unambiguous value, and is
//     writable by this process. Otherwise it fails with an error wrapping
//     rotate.ErrInvalidTarget and a hint (errhint.With) saying what to fix.
//   - Write is atomic: whether it returns an error or not, and even if the
//     process dies, the target holds the old key or the new one, never a
//     mix. It does nothing when the target already holds the key (a
//     write-only target writes again), so a resumed rotation can simply
//     write again. DotEnv, Compose, K8s and CloudRun refuse
//     (rotate.ErrTargetChanged) when the value changed since the last Read.
//   - Writes change only the key. File targets keep every other byte, the
//     file's mode and, where the process may, its owner; they write the
//     file a symlink points to, not the link.
//   - No key string appears in an error, a String or a log line: errors
//     name targets, paths, variables and line numbers. A temporary file of
//     an interrupted write does hold the new key; CleanTemp removes it (the
//     command line calls it for every file target before each run that
//     writes targets).
package targets
