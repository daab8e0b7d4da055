// Command setcheck validates Security Event Tokens the way an independent SSF receiver
// would, written from the specification texts alone: RFC 8417 (SET), RFC 9493 (Subject
// Identifiers), OpenID Shared Signals Framework 1.0 Final §3, §4, §7 and §8.1.4-§8.1.5,
// OpenID CAEP 1.0 §2 and §3.1, and the CAEP Interoperability Profile 1.0. The JOSE work
// (JWS signature, JWK parsing) is done by github.com/lestrrat-go/jwx/v2, the library SGNL's
// caep.dev secevent module builds on.
//
// Usage:
//
//	setcheck -issuer URL -aud AUDIENCE [-jwks FILE] < sets.jsonl
//
// Without -jwks the Transmitter Configuration Metadata is read from the issuer (SSF §7.2)
// and the keys from its jwks_uri. Every input line is one SET: either the compact
// serialization, or a JSON object {"label", "set", "stream_id", "state", "alg"} where
// stream_id is the stream the SET was delivered on, state the one the verification request
// carried and alg the signing algorithm the stream was configured with. One JSON verdict is
// printed per SET. Exit status: 0 every SET valid, 1 at least one refused, 2 usage,
// configuration or input error (including no SET at all).
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	sessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	verification   = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	streamUpdated  = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
)

// Input is one line of the input when it is a JSON object.
type Input struct {
	Label    string  `json:"label"`
	SET      string  `json:"set"`
	StreamID string  `json:"stream_id"`
	State    *string `json:"state"`
	Alg      string  `json:"alg"`
}

// Problem is one broken rule: a stable rule name and what was found.
type Problem struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Verdict is printed, one JSON line, for every SET read.
type Verdict struct {
	Label     string         `json:"label"`
	OK        bool           `json:"ok"`
	Problems  []Problem      `json:"problems"`
	Alg       string         `json:"alg,omitempty"`
	Kid       string         `json:"kid,omitempty"`
	Typ       string         `json:"typ,omitempty"`
	EventType string         `json:"event_type,omitempty"`
	Claims    map[string]any `json:"claims,omitempty"`
}

type transmitter struct {
	issuer   string
	audience string
	keys     jwk.Set
	critical map[string]bool // critical_subject_members (SSF §7.1)
	skew     time.Duration
	now      time.Time
	seenJTI  map[string]string
}

func main() {
	issuer := flag.String("issuer", "", "the Transmitter's Issuer (SSF §7.2); required")
	audience := flag.String("aud", "", "this Receiver's audience value (RFC 8417 §2.2 aud); required")
	jwksFile := flag.String("jwks", "", "read the keys from this JWK Set file instead of the jwks_uri of the issuer's ssf-configuration")
	skew := flag.Duration("skew", time.Minute, "clock skew accepted for iat in the future")
	flag.Parse()
	if *issuer == "" || *audience == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: setcheck -issuer URL -aud AUDIENCE [-jwks FILE] < sets.jsonl")
		os.Exit(2)
	}
	t := &transmitter{issuer: *issuer, audience: *audience, skew: *skew, now: time.Now(),
		seenJTI: map[string]string{}, critical: map[string]bool{}}
	if err := t.load(*jwksFile); err != nil {
		fatal(err)
	}

	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
	count, refused := 0, 0
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		count++
		in := Input{Label: fmt.Sprintf("line %d", count)}
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &in); err != nil || in.SET == "" {
				fatal(fmt.Errorf("input line %d is neither a compact SET nor a JSON object with a \"set\" string", count))
			}
			if in.Label == "" {
				in.Label = fmt.Sprintf("line %d", count)
			}
		} else {
			in.SET = line
		}
		v := t.check(in)
		if !v.OK {
			refused++
		}
		if err := out.Encode(v); err != nil {
			fatal(err)
		}
	}
	if err := scanner.Err(); err != nil {
		fatal(fmt.Errorf("reading the input: %w", err))
	}
	if count == 0 {
		fatal(errors.New("no SET on the input: nothing was validated"))
	}
	fmt.Fprintf(os.Stderr, "setcheck: %d SETs, %d valid, %d refused\n", count, count-refused, refused)
	if refused > 0 {
		os.Exit(1)
	}
}

func fatal(err error) {
	msg, _ := json.Marshal(map[string]string{"error": err.Error()})
	fmt.Fprintln(os.Stderr, string(msg))
	os.Exit(2)
}

// --- Transmitter Configuration Metadata and keys ---

// configURL inserts /.well-known/ssf-configuration between host and path (SSF §7.2).
func configURL(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("the issuer %q is not an absolute URL without query and fragment", issuer)
	}
	if err := transportAllowed(u); err != nil {
		return "", err
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	return u.Scheme + "://" + u.Host + "/.well-known/ssf-configuration" + path, nil
}

// transportAllowed: https, or plain http to a loopback address only (the tests' servers).
func transportAllowed(u *url.URL) error {
	if u.Scheme == "https" {
		return nil
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("%s: only https (or http to a loopback address) is accepted", u.Redacted())
}

var httpClient = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return errors.New("redirects are not followed")
	},
}

func getJSON(rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", rawURL)
	}
	if err := transportAllowed(u); err != nil {
		return nil, err
	}
	resp, err := httpClient.Get(rawURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %d", rawURL, resp.StatusCode)
	}
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if media != "application/json" && media != "application/jwk-set+json" {
		return nil, fmt.Errorf("GET %s answered the content type %q, not application/json", rawURL, media)
	}
	return body, nil
}

func (t *transmitter) load(jwksFile string) error {
	var jwksJSON []byte
	if jwksFile != "" {
		data, err := os.ReadFile(jwksFile)
		if err != nil {
			return err
		}
		jwksJSON = data
	} else {
		where, err := configURL(t.issuer)
		if err != nil {
			return err
		}
		body, err := getJSON(where)
		if err != nil {
			return fmt.Errorf("transmitter configuration: %w", err)
		}
		if err := noDuplicateMembers(body); err != nil {
			return fmt.Errorf("transmitter configuration: %w", err)
		}
		var config map[string]any
		if err := json.Unmarshal(body, &config); err != nil {
			return fmt.Errorf("transmitter configuration is not a JSON object: %w", err)
		}
		// SSF §7.2.4: "The issuer value returned MUST be identical to the Issuer URL that
		// was directly used to retrieve the configuration information."
		if config["issuer"] != t.issuer {
			return fmt.Errorf("transmitter configuration: issuer %v is not the Issuer %q it was read from (SSF §7.2.4)", config["issuer"], t.issuer)
		}
		// CAEP Interoperability Profile, "Spec Version": spec_version 1_0 or greater.
		if v, _ := config["spec_version"].(string); v == "" {
			return errors.New("transmitter configuration: spec_version is missing (CAEP Interoperability Profile)")
		}
		jwksURI, _ := config["jwks_uri"].(string)
		if jwksURI == "" {
			return errors.New("transmitter configuration: jwks_uri is missing (SSF §7.1, CAEP Interoperability Profile)")
		}
		if list, ok := config["critical_subject_members"].([]any); ok {
			for _, name := range list {
				if s, ok := name.(string); ok {
					t.critical[s] = true
				}
			}
		}
		body, err = getJSON(jwksURI)
		if err != nil {
			return fmt.Errorf("jwks_uri: %w", err)
		}
		jwksJSON = body
	}
	set, err := jwk.Parse(jwksJSON)
	if err != nil {
		return fmt.Errorf("the JWK Set does not parse: %w", err)
	}
	if set.Len() == 0 {
		return errors.New("the JWK Set holds no key")
	}
	for i := 0; i < set.Len(); i++ {
		key, _ := set.Key(i)
		if isPrivate(key) {
			return fmt.Errorf("the JWK Set publishes private key material (kid %q)", key.KeyID())
		}
	}
	t.keys = set
	return nil
}

func isPrivate(key jwk.Key) bool {
	switch key.(type) {
	case jwk.RSAPrivateKey, jwk.ECDSAPrivateKey, jwk.OKPPrivateKey, jwk.SymmetricKey:
		return true
	}
	return false
}

// --- one SET ---

var languageTag = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`)

func (t *transmitter) check(in Input) Verdict {
	v := Verdict{Label: in.Label, Problems: []Problem{}}
	fail := func(rule, format string, args ...any) {
		v.Problems = append(v.Problems, Problem{Rule: rule, Message: fmt.Sprintf(format, args...)})
	}
	done := func() Verdict {
		v.OK = len(v.Problems) == 0
		return v
	}

	// RFC 8417 §2 / RFC 7515 §7.1: a JWS in the compact serialization (not a JWE, not JSON).
	parts := strings.Split(in.SET, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		fail("jws-compact", "not a JWS in the compact serialization (%d dot-separated parts)", len(parts))
		return done()
	}
	headerJSON, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		fail("jose-header", "the JOSE header is not base64url without padding")
		return done()
	}
	if err := noDuplicateMembers(headerJSON); err != nil {
		fail("jose-header", "the JOSE header: %v", err)
		return done()
	}
	var header map[string]any
	if err := json.Unmarshal(headerJSON, &header); err != nil || header == nil {
		fail("jose-header", "the JOSE header is not a JSON object")
		return done()
	}

	// Algorithms: the CAEP Interoperability Profile ("Event Signatures") requires RS256 with
	// keys of at least 2048 bits; ES256 is the other algorithm a stream may be configured
	// with. Nothing else, "none" least of all.
	alg, _ := header["alg"].(string)
	v.Alg = alg
	if alg != "RS256" && alg != "ES256" {
		fail("alg", "alg %q is not RS256 or ES256", alg)
		return done()
	}
	if in.Alg != "" && alg != in.Alg {
		fail("alg", "alg %s is not the %s the stream was configured with", alg, in.Alg)
	}
	// SSF §4.1.1 explicit typing, RFC 8417 §2.3: typ secevent+jwt. RFC 7515 §4.1.9 lets
	// the "application/" prefix be left out and compares case-insensitively.
	typ, _ := header["typ"].(string)
	v.Typ = typ
	if t := strings.ToLower(typ); t != "secevent+jwt" && t != "application/secevent+jwt" {
		fail("typ", "typ %q is not secevent+jwt (SSF 1.0 §4.1.1, RFC 8417 §2.3)", typ)
	}
	// RFC 7515 §4.1.11: an extension listed in crit that we do not understand refuses the JWS.
	if _, present := header["crit"]; present {
		fail("crit", "the JOSE header lists crit extensions this receiver does not understand")
	}
	kid, _ := header["kid"].(string)
	v.Kid = kid
	if kid == "" {
		fail("kid", "no kid: the key cannot be chosen from the jwks_uri's set (SSF §4.1.4)")
		return done()
	}
	key, found := t.keys.LookupKeyID(kid)
	if !found {
		fail("key", "no key with kid %q in the Transmitter's JWK Set", kid)
		return done()
	}
	raw, problem := usableKey(key, alg)
	if problem != "" {
		fail("key", "%s", problem)
		return done()
	}
	payload, err := jws.Verify([]byte(in.SET), jws.WithKey(jwa.SignatureAlgorithm(alg), raw))
	if err != nil {
		fail("signature", "the JWS signature does not verify with the key %q", kid)
		return done()
	}

	// The claims (RFC 7519 §4: duplicate claim names refused).
	if err := noDuplicateMembers(payload); err != nil {
		fail("claims-json", "the claims: %v", err)
		return done()
	}
	decoder := json.NewDecoder(bytes.NewReader(payload))
	decoder.UseNumber()
	var claims map[string]any
	if err := decoder.Decode(&claims); err != nil || claims == nil {
		fail("claims-json", "the claims are not a JSON object")
		return done()
	}
	v.Claims = claims

	// iss: RFC 8417 §2.2 REQUIRED; SSF §4.1.6 and §7.2.4 the configured Issuer.
	if iss, ok := claims["iss"].(string); !ok {
		fail("iss", "iss is missing or not a string (RFC 8417 §2.2)")
	} else if iss != t.issuer {
		fail("iss", "iss is not the Transmitter's Issuer %q (SSF 1.0 §4.1.6)", t.issuer)
	}
	// aud: a string or an array of strings (SSF §4.1.8) naming this receiver.
	if !audienceHas(claims["aud"], t.audience) {
		fail("aud", "aud is missing, malformed or does not name the audience %q (SSF 1.0 §4.1.8)", t.audience)
	}
	// iat: RFC 8417 §2.2 REQUIRED NumericDate, not in the future.
	if iat, ok := numericDate(claims["iat"]); !ok {
		fail("iat", "iat is missing or not a NumericDate (RFC 8417 §2.2)")
	} else if iat > float64(t.now.Add(t.skew).Unix()) {
		fail("iat", "iat lies in the future")
	}
	// jti: RFC 8417 §2.2 REQUIRED, unique per SET.
	if jti, ok := claims["jti"].(string); !ok || jti == "" {
		fail("jti", "jti is missing or not a non-empty string (RFC 8417 §2.2)")
	} else if first, seen := t.seenJTI[jti]; seen {
		fail("jti-unique", "jti repeats the one of %q (RFC 8417 §2.2: unique per SET)", first)
	} else {
		t.seenJTI[jti] = in.Label
	}
	// SSF §4.1.2 / §4.1.3: no sub; SSF §4.1.7: no exp.
	if _, present := claims["sub"]; present {
		fail("sub", "the sub claim is present (SSF 1.0 §4.1.2: MUST NOT)")
	}
	if _, present := claims["exp"]; present {
		fail("exp", "the exp claim is present (SSF 1.0 §4.1.7: MUST NOT)")
	}
	// txn: SSF §4.1.9 SHOULD; required by this project's profile (issue 13 A.2).
	if txn, ok := claims["txn"].(string); !ok || txn == "" {
		fail("txn", "txn is missing or not a non-empty string (SSF 1.0 §4.1.9)")
	}
	if toe, present := claims["toe"]; present {
		if _, ok := numericDate(toe); !ok {
			fail("toe", "toe is not a NumericDate (RFC 8417 §2.2)")
		}
	}
	// sub_id: SSF §3.1 REQUIRED top-level member; RFC 9493 / SSF §3.2-§3.5 formats.
	subID, hasSubID := claims["sub_id"]
	if !hasSubID {
		fail("sub_id", "the top-level sub_id claim is missing (SSF 1.0 §3.1)")
	} else {
		for _, p := range checkSubject("sub_id", subID, true) {
			fail("sub_id", "%s", p)
		}
		for _, p := range t.criticalMembers(subID) {
			fail("sub_id", "%s", p)
		}
	}

	// events: RFC 8417 §2.2 REQUIRED object; exactly one event (CAEP Interoperability
	// Profile, "The events claim"; SSF §4.2.1 SHOULD).
	events, ok := claims["events"].(map[string]any)
	if !ok {
		fail("events", "events is missing or not a JSON object (RFC 8417 §2.2)")
		return done()
	}
	if len(events) != 1 {
		fail("events", "events holds %d events, not exactly one (CAEP Interoperability Profile)", len(events))
		return done()
	}
	var eventType string
	for k := range events {
		eventType = k
	}
	v.EventType = eventType
	event, ok := events[eventType].(map[string]any)
	if !ok {
		fail("events", "the event of type %q is not a JSON object (RFC 8417 §2.2)", eventType)
		return done()
	}
	switch eventType {
	case sessionRevoked:
		checkSessionRevoked(event, claims, fail)
	case verification:
		for _, p := range streamSubject(subID, in.StreamID) {
			fail("verification/sub_id", "%s (SSF 1.0 §8.1.4.1)", p)
		}
		checkNoSubjectField(event, "verification", fail)
		state, present := event["state"]
		if present {
			if _, isString := state.(string); !isString {
				fail("verification/state", "state is not a string (SSF 1.0 §8.1.4.1)")
			}
		}
		if in.State != nil && (!present || state != *in.State) {
			fail("verification/state", "state is not the one the verification request carried (SSF 1.0 §8.1.4.2: MUST echo)")
		}
	case streamUpdated:
		for _, p := range streamSubject(subID, in.StreamID) {
			fail("stream-updated/sub_id", "%s (SSF 1.0 §8.1.5)", p)
		}
		checkNoSubjectField(event, "stream-updated", fail)
		switch event["status"] {
		case "enabled", "paused", "disabled":
		default:
			fail("stream-updated/status", "status is missing or not enabled, paused or disabled (SSF 1.0 §8.1.5, §8.1.2)")
		}
		if reason, present := event["reason"]; present {
			if _, isString := reason.(string); !isString {
				fail("stream-updated/reason", "reason is not a string (SSF 1.0 §8.1.5)")
			}
		}
	default:
		fail("event-type", "the event type %q is none of the types this receiver validates", eventType)
	}
	return done()
}

// checkSessionRevoked: CAEP 1.0 §2 (optional event claims) and §3.1, the CAEP
// Interoperability Profile (Session Revocation: reason_admin non-empty) and this project's
// profile (issue 13 A.2: event_timestamp and initiating_entity always present).
func checkSessionRevoked(event, claims map[string]any, fail func(string, string, ...any)) {
	if ts, ok := numericDate(event["event_timestamp"]); !ok {
		fail("session-revoked/event_timestamp", "event_timestamp is missing or not a NumericDate (CAEP 1.0 §2)")
	} else if iat, ok := numericDate(claims["iat"]); ok && ts > iat {
		fail("session-revoked/event_timestamp", "event_timestamp is later than the SET's iat (CAEP 1.0 §3.1: the time the revocation occurred)")
	}
	switch event["initiating_entity"] {
	case "admin", "user", "policy", "system":
	default:
		fail("session-revoked/initiating_entity", "initiating_entity is missing or not admin, user, policy or system (CAEP 1.0 §2)")
	}
	if problem := localized(event["reason_admin"]); problem != "" {
		fail("session-revoked/reason_admin", "reason_admin %s (CAEP 1.0 §2; CAEP Interoperability Profile: MUST be non-empty)", problem)
	}
	// SSF §3.1.1: CAEP's existing event types MAY describe the subject in the event too.
	if subject, present := event["subject"]; present {
		for _, p := range checkSubject("events.session-revoked.subject", subject, true) {
			fail("session-revoked/subject", "%s", p)
		}
	}
	if reasonUser, present := event["reason_user"]; present {
		if problem := localized(reasonUser); problem != "" {
			fail("session-revoked/reason_user", "reason_user %s (CAEP 1.0 §2)", problem)
		}
	}
}

// checkNoSubjectField: SSF §3.1.2, event types defined since SSF MUST NOT carry a subject.
func checkNoSubjectField(event map[string]any, name string, fail func(string, string, ...any)) {
	if _, present := event["subject"]; present {
		fail(name+"/subject", "the event carries a subject field (SSF 1.0 §3.1.2: new event types MUST NOT)")
	}
}

// localized: a JSON object of one or more BCP 47 language tag -> non-empty string.
func localized(value any) string {
	if value == nil {
		return "is missing"
	}
	obj, ok := value.(map[string]any)
	if !ok {
		return "is not a JSON object of language tag to message"
	}
	if len(obj) == 0 {
		return "is empty"
	}
	for tag, msg := range obj {
		if !languageTag.MatchString(tag) {
			return fmt.Sprintf("has the key %q, which is not a BCP 47 language tag", tag)
		}
		if s, ok := msg.(string); !ok || strings.TrimSpace(s) == "" {
			return fmt.Sprintf("has an empty or non-string message for %q", tag)
		}
	}
	return ""
}

// criticalMembers: SSF §3.6, an event whose subject has a critical member this receiver
// cannot process MUST be discarded. This receiver processes the members of SSF §3.3.
func (t *transmitter) criticalMembers(subID any) []string {
	obj, _ := subID.(map[string]any)
	if obj == nil || obj["format"] != "complex" {
		return nil
	}
	var problems []string
	for _, name := range sortedKeys(obj) {
		if name != "format" && t.critical[name] && !complexMembers[name] {
			problems = append(problems, fmt.Sprintf("sub_id has the critical member %q this receiver cannot process (SSF 1.0 §3.6)", name))
		}
	}
	return problems
}

func usableKey(key jwk.Key, alg string) (any, string) {
	if use := key.KeyUsage(); use != "" && use != "sig" {
		return nil, fmt.Sprintf("the key %q has use %q, not sig", key.KeyID(), use)
	}
	if kalg := key.Algorithm().String(); kalg != "" && kalg != alg {
		return nil, fmt.Sprintf("the key %q is for %s, the SET says %s", key.KeyID(), kalg, alg)
	}
	var raw any
	if err := key.Raw(&raw); err != nil {
		return nil, fmt.Sprintf("the key %q cannot be used: %v", key.KeyID(), err)
	}
	switch alg {
	case "RS256":
		pub, ok := raw.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Sprintf("the key %q is not an RSA public key, the SET says RS256", key.KeyID())
		}
		if pub.N.BitLen() < 2048 {
			return nil, fmt.Sprintf("the RSA key %q has %d bits, fewer than 2048 (CAEP Interoperability Profile)", key.KeyID(), pub.N.BitLen())
		}
	case "ES256":
		pub, ok := raw.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Sprintf("the key %q is not a P-256 public key, the SET says ES256", key.KeyID())
		}
	}
	return raw, ""
}

func audienceHas(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		found := false
		for _, item := range a {
			s, ok := item.(string)
			if !ok {
				return false
			}
			found = found || s == want
		}
		return found
	}
	return false
}

func numericDate(value any) (float64, bool) {
	n, ok := value.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	return f, true
}

// noDuplicateMembers refuses JSON with a member name twice in one object (RFC 7515 §4,
// RFC 7519 §4: reject, or take the last; a receiver taking the last can be told apart from
// one taking the first, so refusing is the safe choice) or trailing data.
func noDuplicateMembers(data []byte) error {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	if err := walk(decoder); err != nil {
		return err
	}
	if _, err := decoder.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func walk(decoder *json.Decoder) error {
	token, err := decoder.Token()
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	delim, ok := token.(json.Delim)
	if !ok {
		return nil
	}
	switch delim {
	case '{':
		seen := map[string]bool{}
		for decoder.More() {
			name, err := decoder.Token()
			if err != nil {
				return fmt.Errorf("not JSON: %w", err)
			}
			key, _ := name.(string)
			if seen[key] {
				return fmt.Errorf("the member %q appears twice in one object", key)
			}
			seen[key] = true
			if err := walk(decoder); err != nil {
				return err
			}
		}
	case '[':
		for decoder.More() {
			if err := walk(decoder); err != nil {
				return err
			}
		}
	}
	_, err = decoder.Token() // the closing delimiter
	return err
}
