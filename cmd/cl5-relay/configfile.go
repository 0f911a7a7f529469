package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// loadConfigFile overlays the YAML file at path on cfg.
func loadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := decodeConfigFile(bytes.NewReader(b), cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// decodeConfigFile overlays a YAML document on cfg, strictly: every
// unknown key and every value of the wrong type is reported at once, by
// line and dotted key (limits.peer_timeout), never by Go type. Keys not in
// the document keep their value; a key with no value is empty.
func decodeConfigFile(r io.Reader, cfg *Config) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file
		}
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil
	}
	var errs []error
	decodeInto(doc.Content[0], reflect.ValueOf(cfg).Elem(), "", &errs)
	return errors.Join(errs...)
}

var durationType = reflect.TypeFor[time.Duration]()

// decodeInto decodes n into v, whose dotted key is path ("" at the top).
func decodeInto(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	bad := func(line int, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...)))
	}
	if v.Kind() != reflect.Struct {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.SetZero() // "key:" with no value is empty, as for lists
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			bad(n.Line, "%s: %s", path, wrongType(n, v.Type()))
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "limits:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		where := path
		if where == "" {
			where = "the file"
		}
		bad(n.Line, "%s: want keys and values (key: value), not %s", where, kindName(n))
		return
	}
	fields := map[string]int{}
	var known []string
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
			known = append(known, name)
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		if !ok {
			slices.Sort(known)
			bad(k.Line, "unknown key %s (known here: %s)", key, strings.Join(known, ", "))
			continue
		}
		decodeInto(val, v.Field(idx), key, errs)
	}
}

// wrongType says what a value should have been, in the file's terms.
func wrongType(n *yaml.Node, t reflect.Type) string {
	got := kindName(n)
	if n.Kind == yaml.ScalarNode {
		got = fmt.Sprintf("%q", n.Value)
	}
	switch {
	case t == durationType:
		return got + " is not a duration (like 500ms, 10s, 5m or 6h)"
	case t.Kind() == reflect.Bool:
		return got + " is not true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return got + " is not a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return got + " is not a number"
	case t.Kind() == reflect.Slice:
		return got + " is not a list of strings (- item, or [a, b])"
	default:
		return got + " is not a string"
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}
