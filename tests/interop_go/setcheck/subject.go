package main

// Subject Identifiers (RFC 9493 §3, §3.2) and the SSF 1.0 additions: the formats of
// SSF §3.5 (jwt_id, saml_assertion_id, ip-addresses) and Complex Subjects (SSF §3.3).

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
)

// simpleFormats names, for every simple Identifier Format we know, its members. RFC 9493
// §3: "A Subject Identifier MUST NOT contain any members prohibited or not described by its
// Identifier Format, and MUST contain all members required by its Identifier Format." None
// of these formats has an optional member.
var simpleFormats = map[string][]string{
	// RFC 9493 §3.2
	"account":      {"uri"},
	"email":        {"email"},
	"iss_sub":      {"iss", "sub"},
	"opaque":       {"id"},
	"phone_number": {"phone_number"},
	"did":          {"url"},
	"uri":          {"uri"},
	"aliases":      {"identifiers"},
	// SSF 1.0 §3.5
	"jwt_id":            {"iss", "jti"},
	"saml_assertion_id": {"issuer", "assertion_id"},
	"ip-addresses":      {"ip-addresses"},
}

// complexMembers are the member names SSF 1.0 §3.3 lists for a Complex Subject; "Additional
// Subject Member names MAY be used", so others are accepted and reported.
var complexMembers = map[string]bool{
	"user": true, "device": true, "session": true, "application": true, "tenant": true,
	"org_unit": true, "group": true,
}

var (
	e164      = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
	uriScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.\-]*:`)
)

// checkSubject returns what is wrong with a Subject Member value (empty when nothing is).
// allowComplex is false inside a Complex Subject: its members are simple (SSF §3.3).
func checkSubject(where string, value any, allowComplex bool) []string {
	obj, ok := value.(map[string]any)
	if !ok {
		return []string{where + " is not a JSON object"}
	}
	format, ok := obj["format"].(string)
	if !ok || format == "" {
		return []string{where + `.format is missing or not a non-empty string`}
	}
	if format == "complex" {
		if !allowComplex {
			return []string{where + ` is a complex subject inside a complex subject (SSF 1.0 §3.3: its members are simple)`}
		}
		var problems []string
		count := 0
		for _, name := range sortedKeys(obj) {
			if name == "format" {
				continue
			}
			count++
			problems = append(problems, checkSubject(where+"."+name, obj[name], false)...)
		}
		if count == 0 {
			problems = append(problems, where+` is a complex subject without any member (SSF 1.0 §3.3: "one or more Simple Subject Members")`)
		}
		return problems
	}
	members, known := simpleFormats[format]
	if !known {
		return []string{fmt.Sprintf("%s.format %q is not a format of RFC 9493 or SSF 1.0 §3.5 (and no proprietary format is agreed, SSF 1.0 §3.4)", where, format)}
	}
	var problems []string
	allowed := map[string]bool{"format": true}
	for _, m := range members {
		allowed[m] = true
		if _, present := obj[m]; !present {
			problems = append(problems, fmt.Sprintf("%s (format %s) lacks the required member %q", where, format, m))
		}
	}
	for _, name := range sortedKeys(obj) {
		if !allowed[name] {
			problems = append(problems, fmt.Sprintf("%s (format %s) has the member %q its format does not describe (RFC 9493 §3)", where, format, name))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	str := func(member string) (string, bool) {
		s, ok := obj[member].(string)
		if !ok || s == "" {
			problems = append(problems, fmt.Sprintf("%s.%s is not a non-empty string", where, member))
		}
		return s, ok && s != ""
	}
	switch format {
	case "account":
		if s, ok := str("uri"); ok && !strings.HasPrefix(s, "acct:") {
			problems = append(problems, where+`.uri is not an "acct" URI (RFC 9493 §3.2.1)`)
		}
	case "email":
		if s, ok := str("email"); ok {
			at := strings.LastIndex(s, "@")
			if at <= 0 || at == len(s)-1 {
				problems = append(problems, where+".email is not an addr-spec (RFC 9493 §3.2.2)")
			}
		}
	case "iss_sub":
		str("iss")
		str("sub")
	case "opaque":
		str("id")
	case "phone_number":
		if s, ok := str("phone_number"); ok && !e164.MatchString(s) {
			problems = append(problems, where+".phone_number is not an E.164 number (RFC 9493 §3.2.5)")
		}
	case "did":
		if s, ok := str("url"); ok && !strings.HasPrefix(s, "did:") {
			problems = append(problems, where+`.url is not a DID URL (RFC 9493 §3.2.6)`)
		}
	case "uri":
		if s, ok := str("uri"); ok && !uriScheme.MatchString(s) {
			problems = append(problems, where+".uri is not an absolute URI (RFC 9493 §3.2.7)")
		}
	case "aliases":
		list, ok := obj["identifiers"].([]any)
		if !ok || len(list) == 0 {
			problems = append(problems, where+".identifiers is not a non-empty array (RFC 9493 §3.2.8)")
			break
		}
		for i, item := range list {
			inner := fmt.Sprintf("%s.identifiers[%d]", where, i)
			if m, ok := item.(map[string]any); ok && m["format"] == "aliases" {
				problems = append(problems, inner+" is itself an aliases identifier (RFC 9493 §3.2.8)")
				continue
			}
			problems = append(problems, checkSubject(inner, item, false)...)
		}
	case "jwt_id":
		str("iss")
		str("jti")
	case "saml_assertion_id":
		str("issuer")
		str("assertion_id")
	case "ip-addresses":
		list, ok := obj["ip-addresses"].([]any)
		if !ok || len(list) == 0 {
			problems = append(problems, where+".ip-addresses is not a non-empty array (SSF 1.0 §3.5.3)")
			break
		}
		for i, item := range list {
			if s, ok := item.(string); !ok || net.ParseIP(s) == nil {
				problems = append(problems, fmt.Sprintf("%s.ip-addresses[%d] is not an IP address", where, i))
			}
		}
	}
	return problems
}

// streamSubject checks the sub_id of the SSF stream events (verification SSF 1.0 §8.1.4.1,
// stream-updated §8.1.5): "format opaque" and its id the stream's id.
func streamSubject(subID any, streamID string) []string {
	obj, _ := subID.(map[string]any)
	if obj == nil || obj["format"] != "opaque" {
		return []string{"sub_id is not a simple subject of format opaque"}
	}
	id, _ := obj["id"].(string)
	if streamID != "" && id != streamID {
		return []string{"sub_id.id is not the stream_id of the stream the SET was delivered on"}
	}
	return nil
}

func sortedKeys(obj map[string]any) []string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
