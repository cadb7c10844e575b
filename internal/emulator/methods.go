package emulator

import "sort"

// method is what the emulator knows of a method it counts.
type method struct {
	// permission is the IAM permission the method needs, as the APIs'
	// reference pages list them; "" for none (the Gemini API is called
	// with an API key, not as an IAM principal, and testIamPermissions
	// needs no permission).
	permission string
	// mutating: the method changes state.
	mutating bool
}

// methods is every method the emulator counts, by the name its call
// counters, faults and hooks use ("apikeys.CreateKey").
var methods = map[string]method{
	"apikeys.CreateKey":    {permission: "apikeys.keys.create", mutating: true},
	"apikeys.GetKey":       {permission: "apikeys.keys.get"},
	"apikeys.GetKeyString": {permission: "apikeys.keys.getKeyString"},
	"apikeys.LookupKey":    {permission: "apikeys.keys.lookup"},
	"apikeys.ListKeys":     {permission: "apikeys.keys.list"},
	"apikeys.UpdateKey":    {permission: "apikeys.keys.update", mutating: true},
	"apikeys.DeleteKey":    {permission: "apikeys.keys.delete", mutating: true},
	"apikeys.UndeleteKey":  {permission: "apikeys.keys.undelete", mutating: true},
	"apikeys.GetOperation": {permission: "serviceusage.operations.get"},

	"secretmanager.CreateSecret":         {permission: "secretmanager.secrets.create", mutating: true},
	"secretmanager.GetSecret":            {permission: "secretmanager.secrets.get"},
	"secretmanager.ListSecrets":          {permission: "secretmanager.secrets.list"},
	"secretmanager.UpdateSecret":         {permission: "secretmanager.secrets.update", mutating: true},
	"secretmanager.DeleteSecret":         {permission: "secretmanager.secrets.delete", mutating: true},
	"secretmanager.AddSecretVersion":     {permission: "secretmanager.versions.add", mutating: true},
	"secretmanager.GetSecretVersion":     {permission: "secretmanager.versions.get"},
	"secretmanager.ListSecretVersions":   {permission: "secretmanager.versions.list"},
	"secretmanager.AccessSecretVersion":  {permission: "secretmanager.versions.access"},
	"secretmanager.EnableSecretVersion":  {permission: "secretmanager.versions.enable", mutating: true},
	"secretmanager.DisableSecretVersion": {permission: "secretmanager.versions.disable", mutating: true},
	"secretmanager.DestroySecretVersion": {permission: "secretmanager.versions.destroy", mutating: true},

	"gemini.ListModels":      {},
	"gemini.CountTokens":     {},
	"gemini.GenerateContent": {},

	"run.GetService":         {permission: "run.services.get"},
	"run.UpdateService":      {permission: "run.services.update", mutating: true},
	"run.GetOperation":       {permission: "run.operations.get"},
	"run.TestIamPermissions": {},

	// plan's read-only access checks (access.go)
	"resourcemanager.TestIamPermissions": {},
	"serviceusage.BatchGetServices":      {permission: "serviceusage.services.get"},
	"iam.GetServiceAccount":              {permission: "iam.serviceAccounts.get"},
	"iam.TestIamPermissions":             {},
	"secretmanager.TestIamPermissions":   {},
}

// Methods returns the names of all methods the emulator counts, sorted;
// isMutating reports whether a method changes state.
func Methods() (all []string, isMutating func(string) bool) {
	for m := range methods {
		all = append(all, m)
	}
	sort.Strings(all)
	return all, func(m string) bool { return methods[m].mutating }
}

// PermissionOf returns the IAM permission a method needs ("" for none).
func PermissionOf(method string) string { return methods[method].permission }
