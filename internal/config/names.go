package config

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// nameList describes a field that holds a list of names: a compose
// target's services, a k8s target's deployments to restart, an exec
// target's variables to pass on.
type nameList struct {
	what     string            // one name's kind: "service"
	listHint string            // hint when the field is not a list
	itemHint string            // hint when an element is not a name
	badHint  string            // hint for an invalid name
	valid    func(string) bool // whether a name is valid
}

// names reads the list of names in f. It reports a field that is not a
// list, elements that are not names, key strings, invalid names and names
// listed twice, and returns nil after any of them. nodes are the names'
// nodes.
func (p *parser) names(f field, l nameList) (names []string, nodes []*yaml.Node) {
	field := f.key.Value
	n := deref(f.val)
	if n.Kind != yaml.SequenceNode {
		hint := l.listHint
		if n.Kind == yaml.ScalarNode && l.valid(n.Value) {
			hint = fmt.Sprintf("write it as a list: \"%s: [%s]\"", field, n.Value)
		}
		p.at(n, hint, "%s must be a list of %s names, not %s", field, l.what, kind(n))
		return nil, nil
	}
	before := len(p.errs)
	seen := map[string]int{}
	for _, item := range n.Content {
		item = deref(item)
		switch {
		case item.Kind != yaml.ScalarNode || isNull(item):
			p.at(item, l.itemHint, "a %s must be a name, not %s", l.what, kind(item))
		case looksLikeKey(item.Value):
			p.at(item, fmt.Sprintf("remove the key string from this file (and rotate that key if the file was shared); list %s names here", l.what),
				"%s holds what looks like an API key string", field)
		case !l.valid(item.Value):
			p.at(item, l.badHint, "invalid %s name %s", l.what, quote(item.Value))
		case seen[item.Value] != 0:
			p.at(item, fmt.Sprintf("list each %s once", l.what), "%s %s is listed twice (first at line %d)", l.what, quote(item.Value), seen[item.Value])
		default:
			seen[item.Value] = item.Line
			names = append(names, item.Value)
			nodes = append(nodes, item)
		}
	}
	if len(p.errs) != before {
		return nil, nil
	}
	return names, nodes
}
