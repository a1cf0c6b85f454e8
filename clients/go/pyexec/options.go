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
	routeToOwner   bool
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

// WithRouteToOwner sends each session's calls straight to the replica that
// holds it, when pyexecd replicas run with --peers behind a balancer: Bind
// names the owner (Session.Owner), and a replica that forwards a call says
// where the owner is (x-pyexec-owner). The client keeps one channel per
// owner, made with the same options and credentials as the dial target
// (the address is a routing hint, never trusted for anything else), and
// closes them at Close. When an owner cannot be reached (not connected
// within 1 s, refused, UNAVAILABLE), its calls go through the dial target
// again, which forwards them, and the owner is not tried for 10 s. Off by
// default: the dial target (balancer) then carries every call.
func WithRouteToOwner() Option {
	return func(d *dialConfig) error {
		d.routeToOwner = true
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
	funcs     map[string]Func
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

// WithFunction makes fn callable as name by this one Eval, Exec or Call
// (pyexec.call(name, ...) in Python), in addition to the functions
// registered on the client (this one wins over a registered one of the same
// name). Not for streams.
func WithFunction(name string, fn Func) CallOption {
	return func(c *callConfig) {
		if c.funcs == nil {
			c.funcs = map[string]Func{}
		}
		c.funcs[name] = fn
	}
}

// BindOption configures Bind and Client.Session.
type BindOption func(*bindConfig)

type bindConfig struct {
	idle     time.Duration
	restore  []byte
	leaseCtx context.Context
	noLease  bool
}

// WithRestore binds a session that starts with the state of a snapshot
// (Session.Snapshot's Blob): its variables, functions, imported modules and
// refs. The server restores it for the principal that took it only; a blob
// that is not one of this deployment's is ErrInvalidArgument. What did not
// come back is in Session.RestoreLost and Session.RestoreError.
func WithRestore(blob []byte) BindOption {
	return func(b *bindConfig) { b.restore = blob }
}

// WithLeaseContext ties the session's lease to ctx instead of the context
// passed to Bind: the session is unbound (after the server's --lease_grace)
// once ctx is done, at Unbind or Client.Close, or when this process goes
// away, whichever comes first. context.Background() keeps it for the
// client's life.
func WithLeaseContext(ctx context.Context) BindOption {
	return func(b *bindConfig) { b.leaseCtx = ctx }
}

// WithoutLease binds a session without a lease: it outlives this client
// and lives until Unbind or its idle timeout, as sessions did before leases.
func WithoutLease() BindOption {
	return func(b *bindConfig) { b.noLease = true }
}

// WithIdleTimeout asks for the session's idle timeout (rounded up to whole
// seconds, capped by the server's --max_session_idle_timeout).
func WithIdleTimeout(t time.Duration) BindOption {
	return func(b *bindConfig) { b.idle = t }
}
