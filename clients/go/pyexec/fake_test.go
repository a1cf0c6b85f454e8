package pyexec_test

// TLS and bearer-token tests against a fake PyExec server written here. It
// records what the client puts on the wire, which the real pyexecd does not
// show: the authorization metadata on every RPC, the transport, and the
// client certificate's CN. auth_test.go covers the same against pyexecd.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pyexec/pyexec/clients/go/pyexec"
	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// fakePyExec records, per RPC, the authorization metadata and the TLS
// client certificate's CN it saw, and answers every call successfully.
type fakePyExec struct {
	pb.UnimplementedPyExecServer
	want string // when set, calls without "Bearer <want>" get UNAUTHENTICATED

	mu   sync.Mutex
	auth map[string][]string // method -> authorization values
	tls  map[string]string   // method -> "tls" / "tls cn=NAME" / "plaintext"
}

func (f *fakePyExec) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	how := "plaintext"
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			how = "tls"
			if certs := info.State.PeerCertificates; len(certs) > 0 {
				how += " cn=" + certs[0].Subject.CommonName
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth[method] = md.Get("authorization")
	f.tls[method] = how
}

func (f *fakePyExec) Bind(ctx context.Context, _ *pb.BindRequest) (*pb.BindResponse, error) {
	f.record(ctx, "Bind")
	return &pb.BindResponse{Session: "fake-session", IdleTimeoutSeconds: 60}, nil
}

func (f *fakePyExec) Unbind(ctx context.Context, _ *pb.UnbindRequest) (*pb.UnbindResponse, error) {
	f.record(ctx, "Unbind")
	return &pb.UnbindResponse{}, nil
}

func (f *fakePyExec) Eval(ctx context.Context, _ *pb.EvalRequest) (*pb.EvalResponse, error) {
	f.record(ctx, "Eval")
	if f.want != "" {
		if got := f.auth["Eval"]; len(got) != 1 || got[0] != "Bearer "+f.want {
			return nil, status.Error(codes.Unauthenticated, "missing or invalid credentials")
		}
	}
	return &pb.EvalResponse{Value: &pb.Value{Kind: &pb.Value_Int{Int: 1}}}, nil
}

func (f *fakePyExec) Exec(ctx context.Context, _ *pb.ExecRequest) (*pb.ExecResponse, error) {
	f.record(ctx, "Exec")
	return &pb.ExecResponse{}, nil
}

func (f *fakePyExec) Call(ctx context.Context, _ *pb.CallRequest) (*pb.CallResponse, error) {
	f.record(ctx, "Call")
	return &pb.CallResponse{Value: &pb.Value{Kind: &pb.Value_None{None: &pb.NoneValue{}}}}, nil
}

func (f *fakePyExec) GetStats(ctx context.Context, _ *pb.GetStatsRequest) (*pb.GetStatsResponse, error) {
	f.record(ctx, "GetStats")
	return &pb.GetStatsResponse{}, nil
}

// startFake serves a fakePyExec on 127.0.0.1:0, with TLS when creds is set.
func startFake(t *testing.T, creds credentials.TransportCredentials) (*fakePyExec, string) {
	return startFakeWanting(t, creds, "")
}

func startFakeWanting(t *testing.T, creds credentials.TransportCredentials, want string) (*fakePyExec, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	f := &fakePyExec{want: want, auth: map[string][]string{}, tls: map[string]string{}}
	pb.RegisterPyExecServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

// allRPCs drives every RPC the client wraps, through the public API.
func allRPCs(t *testing.T, c *pyexec.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := c.Eval(ctx, "1"); err != nil || v != int64(1) {
		t.Fatalf("Eval: %v, %v", v, err)
	}
	if err := c.Exec(ctx, "pass"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "m", "f", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Session(ctx, func(*pyexec.Session) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

var allMethods = []string{"Eval", "Exec", "Call", "GetStats", "Bind", "Unbind"}

func TestBearerTokenOnEveryRPC(t *testing.T) {
	f, addr := startFake(t, nil)
	c, err := pyexec.Dial(addr, pyexec.WithInsecure(), pyexec.WithToken("s3cret-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allRPCs(t, c)
	for _, m := range allMethods {
		got := f.auth[m]
		if len(got) != 1 || got[0] != "Bearer s3cret-token" {
			t.Errorf("%s: authorization = %q, want [\"Bearer s3cret-token\"]", m, got)
		}
		if f.tls[m] != "plaintext" {
			t.Errorf("%s: transport %s", m, f.tls[m])
		}
	}
}

func TestNoTokenNoAuthorization(t *testing.T) {
	f, addr := startFake(t, nil)
	c, err := pyexec.Dial(addr, pyexec.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allRPCs(t, c)
	for _, m := range allMethods {
		if got := f.auth[m]; len(got) != 0 {
			t.Errorf("%s: authorization %q sent without WithToken", m, got)
		}
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type pki struct {
	dir                                string
	caFile, serverCert, serverKey      string
	clientCert, clientKey, otherCAFile string
	serverPair                         tls.Certificate
	caPool                             *x509.CertPool
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, der
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, serial int64,
	usage x509.ExtKeyUsage, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER)
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	p := &pki{
		dir: dir, caFile: filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server.key"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client.key"),
		otherCAFile: filepath.Join(dir, "other-ca.pem"),
	}
	ca, caKey, caDER := newCA(t, "pyexec test CA")
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	_, _, otherDER := newCA(t, "some other CA")
	writePEM(t, p.otherCAFile, "CERTIFICATE", otherDER)
	issue(t, ca, caKey, "pyexecd", 2, x509.ExtKeyUsageServerAuth, p.serverCert, p.serverKey)
	issue(t, ca, caKey, "go-client", 3, x509.ExtKeyUsageClientAuth, p.clientCert, p.clientKey)
	var err error
	if p.serverPair, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	return p
}

func TestTLSWithCAAndToken(t *testing.T) {
	p := newPKI(t)
	f, addr := startFake(t, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{p.serverPair}}))
	cfg, err := pyexec.TLSFiles(p.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pyexec.Dial(addr, pyexec.WithTLS(cfg), pyexec.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allRPCs(t, c)
	for _, m := range allMethods {
		if f.tls[m] != "tls" {
			t.Errorf("%s: transport %q, want tls without a client certificate", m, f.tls[m])
		}
		if got := f.auth[m]; len(got) != 1 || got[0] != "Bearer tok" {
			t.Errorf("%s: authorization %q over TLS", m, got)
		}
	}
}

func TestTLSRejectsServerFromOtherCA(t *testing.T) {
	p := newPKI(t)
	f, addr := startFake(t, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{p.serverPair}}))
	cfg, err := pyexec.TLSFiles(p.otherCAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pyexec.Dial(addr, pyexec.WithTLS(cfg), pyexec.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable (certificate not trusted)", err)
	}
	if len(f.auth) != 0 {
		t.Fatal("the token reached a server whose certificate is not trusted")
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	f, addr := startFake(t, credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{p.serverPair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.caPool,
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Without a client certificate the handshake fails.
	noCert, err := pyexec.TLSFiles(p.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pyexec.Dial(addr, pyexec.WithTLS(noCert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnavailable) {
		t.Fatalf("without client cert: %v, want ErrUnavailable", err)
	}
	c.Close()

	withCert, err := pyexec.TLSFiles(p.caFile, p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err = pyexec.Dial(addr, pyexec.WithTLS(withCert))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allRPCs(t, c)
	for _, m := range allMethods {
		if f.tls[m] != "tls cn=go-client" {
			t.Errorf("%s: transport %q, want the client certificate", m, f.tls[m])
		}
	}
}

func TestDialOptionErrors(t *testing.T) {
	if _, err := pyexec.Dial("127.0.0.1:1"); err == nil {
		t.Error("Dial without WithTLS or WithInsecure must fail")
	}
	if _, err := pyexec.Dial("127.0.0.1:1", pyexec.WithInsecure(), pyexec.WithTLS(&tls.Config{})); err == nil {
		t.Error("Dial with both WithTLS and WithInsecure must fail")
	}
	if _, err := pyexec.Dial("127.0.0.1:1", pyexec.WithInsecure(), pyexec.WithContexts(0)); err == nil {
		t.Error("WithContexts(0) must fail")
	}
	if _, err := pyexec.TLSFiles("", "cert-only.pem", ""); err == nil {
		t.Error("TLSFiles with a cert and no key must fail")
	}
	if _, err := pyexec.TLSFiles(filepath.Join(t.TempDir(), "missing.pem"), "", ""); err == nil {
		t.Error("TLSFiles with a missing CA must fail")
	}
}

func TestWrongTokenIsErrUnauthenticated(t *testing.T) {
	_, addr := startFakeWanting(t, nil, "right")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, opts := range [][]pyexec.Option{
		{pyexec.WithInsecure(), pyexec.WithToken("wrong")},
		{pyexec.WithInsecure()},
	} {
		c, err := pyexec.Dial(addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Eval(ctx, "1"); !errors.Is(err, pyexec.ErrUnauthenticated) {
			t.Errorf("err = %v, want ErrUnauthenticated", err)
		}
		c.Close()
	}
	c, err := pyexec.Dial(addr, pyexec.WithInsecure(), pyexec.WithToken("right"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Eval(ctx, "1"); err != nil {
		t.Fatalf("right token: %v", err)
	}
}
