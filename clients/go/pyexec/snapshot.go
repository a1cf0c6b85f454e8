package pyexec

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Snapshot is a session's state, serialized by the server (Session.Snapshot).
type Snapshot struct {
	// Blob is opaque and authenticated: Bind with WithRestore(Blob) makes a
	// new session with this state, for the same principal only.
	Blob []byte
	// Lost lists what the snapshot could not carry (sockets, threads,
	// generators in flight, C objects); a restored session lacks them.
	Lost []LostName
	// Modules are imported again by name on restore.
	Modules []string
	// Refs is how many live refs it carries (under the same ids).
	Refs int
}

// LostName is a name a snapshot or a restore left out, and why.
type LostName struct {
	Name   string // "x", or "ref <id>" for a live ref
	Type   string // its type, e.g. "socket.socket"
	Reason string // one line
}

func lostNames(l []*pb.LostName) []LostName {
	if len(l) == 0 {
		return nil
	}
	out := make([]LostName, len(l))
	for i, n := range l {
		out[i] = LostName{Name: n.Name, Type: n.Type, Reason: n.Reason}
	}
	return out
}

// Snapshot serializes the session's state (its __main__ namespace, the
// modules it imported, its live refs) into a blob that Bind(WithRestore)
// turns into a new session with that state, here or on another replica of
// the same deployment. The session carries on unchanged. A state larger
// than the server's --max_snapshot_bytes is ErrPoolExhausted.
func (s *Session) Snapshot(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := s.c.callCtx(ctx)
	defer cancel()
	var resp *pb.SnapshotResponse
	err := s.c.do(ctx, s, false, func(ctx context.Context, stub pb.PyExecClient, hdr *metadata.MD) (err error) {
		resp, err = stub.Snapshot(ctx, &pb.SnapshotRequest{Session: s.token}, grpc.Header(hdr))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Snapshot{Blob: resp.Blob, Lost: lostNames(resp.Lost), Modules: resp.Modules,
		Refs: int(resp.Refs)}, nil
}

// RestoreLost lists, for a session bound WithRestore, the modules that no
// longer import here.
func (s *Session) RestoreLost() []LostName { return s.restoreLost }

// RestoreError is, for a session bound WithRestore, the exception its
// __pyexec_restore__() raised, if any (the state is restored all the same).
func (s *Session) RestoreError() *PythonError { return s.restoreErr }
