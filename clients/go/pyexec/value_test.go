package pyexec

import (
	"errors"
	"math"
	"math/big"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Wire forms of the Go -> Value mapping, without a server.

func TestToValueIntSplit(t *testing.T) {
	huge, _ := new(big.Int).SetString("-9223372036854775809", 10)
	cases := []struct {
		in   any
		want *pb.Value
	}{
		{int64(math.MinInt64), &pb.Value{Kind: &pb.Value_Int{Int: math.MinInt64}}},
		{uint64(math.MaxInt64), &pb.Value{Kind: &pb.Value_Int{Int: math.MaxInt64}}},
		{uint64(math.MaxInt64) + 1, &pb.Value{Kind: &pb.Value_BigInt{BigInt: "9223372036854775808"}}},
		{big.NewInt(-3), &pb.Value{Kind: &pb.Value_Int{Int: -3}}},
		{*big.NewInt(4), &pb.Value{Kind: &pb.Value_Int{Int: 4}}},
		{huge, &pb.Value{Kind: &pb.Value_BigInt{BigInt: "-9223372036854775809"}}},
		{(*big.Int)(nil), &pb.Value{Kind: &pb.Value_None{None: &pb.NoneValue{}}}},
	}
	for _, c := range cases {
		got, err := ToValue(c.in)
		if err != nil || !proto.Equal(got, c.want) {
			t.Errorf("ToValue(%#v) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestToValueKindsStayDistinct(t *testing.T) {
	kinds := map[string]any{
		"list": []any{}, "tuple": Tuple{}, "set": Set{}, "dict": Dict{},
		"bytes": []byte("a"), "str": "a",
	}
	for want, in := range kinds {
		v, err := ToValue(in)
		if err != nil {
			t.Fatal(err)
		}
		var ok bool
		switch want {
		case "list":
			_, ok = v.Kind.(*pb.Value_List)
		case "tuple":
			_, ok = v.Kind.(*pb.Value_Tuple)
		case "set":
			_, ok = v.Kind.(*pb.Value_Set)
		case "dict":
			_, ok = v.Kind.(*pb.Value_Dict)
		case "bytes":
			_, ok = v.Kind.(*pb.Value_Bytes)
		case "str":
			_, ok = v.Kind.(*pb.Value_Str)
		}
		if !ok {
			t.Errorf("%#v encoded as %T, want %s", in, v.Kind, want)
		}
	}
}

func TestDictKeepsOrderBothWays(t *testing.T) {
	d := Dict{{int64(3), "c"}, {"s", int64(1)}, {Tuple{int64(1)}, nil}}
	v, err := ToValue(d)
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromValue(v)
	if err != nil {
		t.Fatal(err)
	}
	bd, ok := back.(Dict)
	if !ok || len(bd) != 3 || bd[0].Key != int64(3) || bd[1].Key != "s" || bd[2].Value != nil {
		t.Fatalf("back = %#v", back)
	}
}

func TestUnconvertibleIsInvalidArgument(t *testing.T) {
	for _, in := range []any{make(chan int), func() {}, struct{ A int }{1}, complex(1, 2)} {
		_, err := ToValue(in)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ToValue(%T) err = %v, want ErrInvalidArgument", in, err)
		}
	}
	// A cycle through an interface stops at the depth bound.
	cyc := []any{nil}
	cyc[0] = cyc
	if _, err := ToValue(cyc); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("cyclic value: %v", err)
	}
}

func TestFromValueMalformed(t *testing.T) {
	bad := []*pb.Value{
		nil,
		{Kind: &pb.Value_BigInt{BigInt: "12x"}},
		{Kind: &pb.Value_Dict{Dict: true}, Keys: []*pb.Value{{Kind: &pb.Value_Int{Int: 1}}}},
		{},
	}
	for _, v := range bad {
		if _, err := FromValue(v); err == nil {
			t.Errorf("FromValue(%v) accepted", v)
		}
	}
}

func TestRefDecodesAndOnlyItsIDGoesBack(t *testing.T) {
	got, err := FromValue(&pb.Value{Kind: &pb.Value_Ref{Ref: &pb.Ref{Id: "ab12", Type: "M", Repr: "<M>"}}})
	if err != nil || got != (Ref{ID: "ab12", Type: "M", Repr: "<M>"}) {
		t.Fatalf("decode: %#v, %v", got, err)
	}
	back, err := toValue(got, 0)
	if err != nil || !proto.Equal(back, &pb.Value{Kind: &pb.Value_Ref{Ref: &pb.Ref{Id: "ab12"}}}) {
		t.Fatalf("encode: %v, %v", back, err)
	}
}
