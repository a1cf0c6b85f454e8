package pyexec_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/clients/go/pyexec"
)

func TestSnapshotAndRestore(t *testing.T) {
	c := dial(t)
	ctx := testCtx(t)
	s := bound(t, c)
	mustExec(t, s, `
import json, socket
data = {'k': [1, 2, 3]}
def double(n):
    return 2 * n
class Box:
    def __init__(self, v):
        self.v = v
sock = socket.socket()
def __pyexec_restore__():
    raise ValueError('restored without its socket')
`)
	ref, err := s.Eval(ctx, "Box(41)")
	if err != nil {
		t.Fatal(err)
	}
	box, ok := ref.(pyexec.Ref)
	if !ok {
		t.Fatalf("Box(41) = %#v, want a Ref", ref)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Blob) == 0 || snap.Refs != 1 {
		t.Fatalf("snapshot: %d bytes, %d refs", len(snap.Blob), snap.Refs)
	}
	if len(snap.Lost) != 1 || snap.Lost[0].Name != "sock" || !strings.Contains(snap.Lost[0].Type, "socket") {
		t.Fatalf("lost %+v, want sock", snap.Lost)
	}
	if !contains(snap.Modules, "json") {
		t.Fatalf("modules %v", snap.Modules)
	}
	// The session carries on unchanged.
	if v := mustEval(t, s, "type(sock).__name__"); v != "socket" {
		t.Fatal(v)
	}

	r, err := c.Bind(ctx, pyexec.WithRestore(snap.Blob))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unbind(context.Background())
	if r.Token() == s.Token() || !r.Leased() {
		t.Fatalf("restored session %q leased %v", r.Token(), r.Leased())
	}
	if e := r.RestoreError(); e == nil || e.Type != "ValueError" || !strings.Contains(e.Message, "without its socket") {
		t.Fatalf("RestoreError = %v", e)
	}
	v, err := r.Eval(ctx, "(data, double(21), json.dumps(1), 'sock' in globals(), b.v + 1)",
		pyexec.WithLocals(map[string]any{"b": box}))
	if err != nil {
		t.Fatal(err)
	}
	want := pyexec.Tuple{map[string]any{"k": []any{int64(1), int64(2), int64(3)}}, int64(42), "1", false, int64(42)}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("restored state %#v\nwant %#v", v, want)
	}
	if _, err := c.Bind(ctx, pyexec.WithRestore([]byte("not a snapshot"))); !errors.Is(err, pyexec.ErrInvalidArgument) {
		t.Fatalf("a forged blob: %v", err)
	}
	if _, err := c.Attach("no-such-token").Snapshot(ctx); !errors.Is(err, pyexec.ErrSessionNotFound) {
		t.Fatalf("Snapshot of an unknown session: %v", err)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
