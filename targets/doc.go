// Package targets implements rotate.Target for each kind of place that
// consumes an API key: a variable in a .env file (DotEnv), and others as
// they are added.
//
// Every target gives the rotation the same guarantees:
//
//   - Read proves, without writing anything, that a later Write can succeed:
//     the target exists, holds exactly one unambiguous value, and is
//     writable by this process. Otherwise it fails with an error wrapping
//     rotate.ErrInvalidTarget and a hint (errhint.With) saying what to fix.
//   - Write is atomic: whether it returns an error or not, and even if the
//     process dies, the target holds the old key or the new one, never a
//     mix. It refuses (rotate.ErrTargetChanged) when the target changed
//     since the last Read, and does nothing when it already holds the key,
//     so a resumed rotation can simply write again.
//   - Writes change only the key. File targets keep every other byte, the
//     file's mode and, where the process may, its owner; they write the
//     file a symlink points to, not the link.
//   - No key string appears in an error, a String or a log line: errors
//     name targets, paths, variables and line numbers. A temporary file of
//     an interrupted write does hold the new key; CleanTemp removes it, and
//     the rotation calls it on its next run.
package targets
