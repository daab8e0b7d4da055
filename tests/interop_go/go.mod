// The independent SET validator of tests/test_ssf_go_interop.py (built by
// .ci/install-go-interop). Its only direct dependency is lestrrat-go/jwx v2, the JOSE
// library SGNL's caep.dev secevent module is built on.
module idp-bridge.test/interop_go

go 1.23.0

require github.com/lestrrat-go/jwx/v2 v2.1.6

require (
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.4.0 // indirect
	github.com/goccy/go-json v0.10.3 // indirect
	github.com/lestrrat-go/blackmagic v1.0.3 // indirect
	github.com/lestrrat-go/httpcc v1.0.1 // indirect
	github.com/lestrrat-go/httprc v1.0.6 // indirect
	github.com/lestrrat-go/iter v1.0.2 // indirect
	github.com/lestrrat-go/option v1.0.1 // indirect
	github.com/segmentio/asm v1.2.0 // indirect
	golang.org/x/crypto v0.32.0 // indirect
	golang.org/x/sys v0.31.0 // indirect
)
