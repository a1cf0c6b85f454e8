package pyexec

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"time"

	"google.golang.org/grpc"
)

// Option configures Dial.
type Option func(*dialConfig) error

type dialConfig struct {
	tls            *tls.Config
	insecure       bool
	token          string
	numContexts    int
	defaultTimeout time.Duration
	extra          []grpc.DialOption
}

// WithTLS connects over TLS with the given configuration (root CAs in
// RootCAs, a client certificate in Certificates for mTLS). See TLSFiles.
func WithTLS(cfg *tls.Config) Option {
	return func(d *dialConfig) error {
		if cfg == nil {
			return fmt.Errorf("pyexec: WithTLS(nil)")
		}
		d.tls = cfg
		return nil
	}
}

// TLSFiles builds a *tls.Config from PEM files: caFile is the CA that signed
// the server's certificate ("" = the system roots); certFile and keyFile are
// the client certificate and key for mTLS (both "" = no client certificate).
func TLSFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("pyexec: reading CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pyexec: no PEM certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("pyexec: a client certificate needs both certFile and keyFile")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("pyexec: loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// WithInsecure connects in plaintext. Use it on loopback or inside a trusted
// network only: code, values and any token travel unencrypted.
func WithInsecure() Option {
	return func(d *dialConfig) error {
		d.insecure = true
		return nil
	}
}

// WithToken sends "authorization: Bearer TOKEN" metadata on every call.
// It is sent over plaintext too (WithInsecure), so that loopback setups work;
// beyond loopback combine it with WithTLS.
func WithToken(token string) Option {
	return func(d *dialConfig) error {
		d.token = token
		return nil
	}
}

// WithContexts sets how many numbered shared contexts Client.Context offers
// (default: GOMAXPROCS). Each is bound lazily, on its first call.
func WithContexts(n int) Option {
	return func(d *dialConfig) error {
		if n < 1 {
			return fmt.Errorf("pyexec: WithContexts(%d): need at least 1", n)
		}
		d.numContexts = n
		return nil
	}
}

// WithDefaultTimeout is the deadline of calls whose ctx carries none. Without
// it such calls get the server's --default_timeout.
func WithDefaultTimeout(t time.Duration) Option {
	return func(d *dialConfig) error {
		d.defaultTimeout = t
		return nil
	}
}

// WithDialOption passes a raw grpc.DialOption through (keepalive, message
// sizes, interceptors, ...).
func WithDialOption(o grpc.DialOption) Option {
	return func(d *dialConfig) error {
		d.extra = append(d.extra, o)
		return nil
	}
}

// bearer implements credentials.PerRPCCredentials.
type bearer struct{ md map[string]string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b.md, nil
}

// RequireTransportSecurity is false so the token also works on loopback
// plaintext; WithToken documents it.
func (b bearer) RequireTransportSecurity() bool { return false }

func defaultContexts() int { return runtime.GOMAXPROCS(0) }

// CallOption configures one Eval, Exec or Call.
type CallOption func(*callConfig)

type callConfig struct {
	locals      map[string]any
	kwargs      map[string]any
	output      *Output
	resultAsRef bool
	// Set by Session.CallMethod and Session.GetAttr only.
	targetRef string
	getAttr   bool
}

// Output receives a call's captured stdout and stderr (see WithOutput).
type Output struct {
	Stdout string
	Stderr string
}

// WithLocals makes names visible to one Eval or Exec.
func WithLocals(locals map[string]any) CallOption {
	return func(c *callConfig) { c.locals = locals }
}

// WithKwargs passes keyword arguments to Call.
func WithKwargs(kwargs map[string]any) CallOption {
	return func(c *callConfig) { c.kwargs = kwargs }
}

// WithOutput stores the call's captured stdout and stderr in out, also when
// the code raised.
func WithOutput(out *Output) CallOption {
	return func(c *callConfig) { c.output = out }
}

// WithResultAsRef asks Eval or Call (and CallStream, for the result as a
// whole) on a bound session to return a Ref even when the result has a
// Value kind: for large results, or to keep working on the object in
// Python. On a stateless call the server refuses it (ErrInvalidArgument).
func WithResultAsRef() CallOption {
	return func(c *callConfig) { c.resultAsRef = true }
}

// BindOption configures Bind and Client.Session.
type BindOption func(*bindConfig)

type bindConfig struct{ idle time.Duration }

// WithIdleTimeout asks for the session's idle timeout (rounded up to whole
// seconds, capped by the server's --max_session_idle_timeout).
func WithIdleTimeout(t time.Duration) BindOption {
	return func(b *bindConfig) { b.idle = t }
}
