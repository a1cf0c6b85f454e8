package pyexec_test

// TLS, mTLS and bearer tokens against the real pyexecd (--auth_tokens_file,
// --tls_cert_file/--tls_key_file, --tls_client_ca_file), with a CA and
// certificates the test generates (newPKI in fake_test.go).

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

func TestRealServerTLSAndTokens(t *testing.T) {
	p := newPKI(t)
	tokens := filepath.Join(p.dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# principal token\nalice alice-token-0123456789abcdef\nbob bob-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := startServer(pyexecdPath(), "--workers=1", "--drain_timeout=1s",
		"--auth_tokens_file="+tokens, "--tls_cert_file="+p.serverCert, "--tls_key_file="+p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	cfg, err := pyexec.TLSFiles(p.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	dialT := func(opts ...pyexec.Option) *pyexec.Client {
		c, err := pyexec.Dial(srv.Addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := dialT(pyexec.WithTLS(cfg), pyexec.WithToken("alice-token-0123456789abcdef"))
	bob := dialT(pyexec.WithTLS(cfg), pyexec.WithToken("bob-token-0123456789abcdef"))
	if _, err := dialT(pyexec.WithTLS(cfg)).Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnauthenticated) {
		t.Errorf("no token: %v, want ErrUnauthenticated", err)
	}
	if _, err := dialT(pyexec.WithTLS(cfg), pyexec.WithToken("guess")).Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnauthenticated) {
		t.Errorf("wrong token: %v, want ErrUnauthenticated", err)
	}
	if _, err := dialT(pyexec.WithInsecure(), pyexec.WithToken("alice-token-0123456789abcdef")).Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnavailable) {
		t.Errorf("plaintext to a TLS port: %v, want ErrUnavailable", err)
	}
	if v, err := alice.Eval(ctx, "6*7"); err != nil || v != int64(42) {
		t.Fatalf("alice: %v, %v", v, err)
	}
	err = alice.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, "secret = 1"); err != nil {
			return err
		}
		if _, err := bob.Attach(s.Token()).Eval(ctx, "secret"); !errors.Is(err, pyexec.ErrSessionNotFound) {
			t.Errorf("bob on alice's session: %v, want ErrSessionNotFound", err)
		}
		v, err := s.Eval(ctx, "secret")
		if err == nil && v != int64(1) {
			t.Errorf("alice's session after bob's try: %v", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRealServerMutualTLS(t *testing.T) {
	p := newPKI(t)
	srv, err := startServer(pyexecdPath(), "--workers=1", "--drain_timeout=1s",
		"--tls_cert_file="+p.serverCert, "--tls_key_file="+p.serverKey,
		"--tls_client_ca_file="+p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	noCert, err := pyexec.TLSFiles(p.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pyexec.Dial(srv.Addr, pyexec.WithTLS(noCert))
	if err != nil {
		t.Fatal(err)
	}
	// The server refuses the handshake, so the call never reaches it.
	if _, err := c.Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnavailable) {
		t.Errorf("without a client certificate: %v, want ErrUnavailable", err)
	}
	c.Close()

	withCert, err := pyexec.TLSFiles(p.caFile, p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err = pyexec.Dial(srv.Addr, pyexec.WithTLS(withCert))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Session(ctx, func(s *pyexec.Session) error {
		if err := s.Exec(ctx, "x = 41"); err != nil {
			return err
		}
		v, err := s.Eval(ctx, "x + 1")
		if err == nil && v != int64(42) {
			t.Errorf("x + 1 = %v", v)
		}
		return err
	})
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
}
