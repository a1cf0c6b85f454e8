package pyexec

import (
	"fmt"
	"math/big"
	"reflect"

	pb "github.com/pyexec/pyexec/clients/go/pyexecv1"
)

// Tuple is a Python tuple. It is kept distinct from a list ([]any) both ways.
type Tuple []any

// Set is a Python set or frozenset: its elements, in no particular order. A
// slice rather than a Go map because elements such as *big.Int, Tuple or
// []byte are not comparable in Go.
type Set []any

// Dict is a Python dict in its own order, for dicts whose keys are not all
// str (ints, tuples, bytes, ...). Results whose keys are all str come back as
// map[string]any instead; either form can be sent.
type Dict []KV

// KV is one entry of a Dict.
type KV struct {
	Key   any
	Value any
}

// Opaque is a Python object with no Value kind: its qualified type name and
// repr(). It is a result only; the server refuses it as an argument.
type Opaque struct {
	Type string
	Repr string
}

// Ref is a live Python object held by a bound session (Value kind `ref`).
// Pass it back as an argument, keyword argument or local of the same
// session; only ID travels. Valid until Release or Unbind.
type Ref struct {
	ID   string
	Type string
	Repr string
}

// maxEncodeDepth stops runaway recursion on cyclic Go values; the server's
// own limit (--max_value_depth, at most 100) is lower and answers
// ErrInvalidArgument with its own message.
const maxEncodeDepth = 1000

// ToValue converts a Go value to the wire Value. Mapping (Go -> Python):
//
//	nil, (*T)(nil)                      None
//	bool                                bool
//	int, int8..int64, uint8..uint64     int (big_int beyond int64)
//	*big.Int, big.Int                   int, any size
//	float32, float64                    float
//	string                              str
//	[]byte                              bytes
//	[]any, other slices and arrays      list
//	Tuple / Set                         tuple / set
//	map[string]any, other maps          dict
//	Dict                                dict, keys of any kind, in order
//	*pb.Value                           sent as is
func ToValue(v any) (*pb.Value, error) { return toValue(v, 0) }

func toValue(v any, depth int) (*pb.Value, error) {
	if depth > maxEncodeDepth {
		return nil, invalidArgument("value nested deeper than %d", maxEncodeDepth)
	}
	switch x := v.(type) {
	case nil:
		return &pb.Value{Kind: &pb.Value_None{None: &pb.NoneValue{}}}, nil
	case *pb.Value:
		return x, nil
	case bool:
		return &pb.Value{Kind: &pb.Value_Bool{Bool: x}}, nil
	case int:
		return intValue(int64(x)), nil
	case int8:
		return intValue(int64(x)), nil
	case int16:
		return intValue(int64(x)), nil
	case int32:
		return intValue(int64(x)), nil
	case int64:
		return intValue(x), nil
	case uint8:
		return intValue(int64(x)), nil
	case uint16:
		return intValue(int64(x)), nil
	case uint32:
		return intValue(int64(x)), nil
	case uint:
		return bigValue(new(big.Int).SetUint64(uint64(x))), nil
	case uint64:
		return bigValue(new(big.Int).SetUint64(x)), nil
	case *big.Int:
		if x == nil {
			return toValue(nil, depth)
		}
		return bigValue(x), nil
	case big.Int:
		return bigValue(&x), nil
	case float32:
		return &pb.Value{Kind: &pb.Value_Float{Float: float64(x)}}, nil
	case float64:
		return &pb.Value{Kind: &pb.Value_Float{Float: x}}, nil
	case string:
		return &pb.Value{Kind: &pb.Value_Str{Str: x}}, nil
	case []byte:
		if x == nil {
			x = []byte{}
		}
		return &pb.Value{Kind: &pb.Value_Bytes{Bytes: x}}, nil
	case Tuple:
		return seqValue(&pb.Value{Kind: &pb.Value_Tuple{Tuple: true}}, x, depth)
	case Set:
		return seqValue(&pb.Value{Kind: &pb.Value_Set{Set: true}}, x, depth)
	case []any:
		return seqValue(&pb.Value{Kind: &pb.Value_List{List: true}}, x, depth)
	case Dict:
		out := &pb.Value{Kind: &pb.Value_Dict{Dict: true}}
		for _, kv := range x {
			k, err := toValue(kv.Key, depth+1)
			if err != nil {
				return nil, err
			}
			val, err := toValue(kv.Value, depth+1)
			if err != nil {
				return nil, err
			}
			out.Keys = append(out.Keys, k)
			out.Items = append(out.Items, val)
		}
		return out, nil
	case map[string]any:
		out := &pb.Value{Kind: &pb.Value_Dict{Dict: true}}
		for k, item := range x {
			val, err := toValue(item, depth+1)
			if err != nil {
				return nil, err
			}
			out.Keys = append(out.Keys, &pb.Value{Kind: &pb.Value_Str{Str: k}})
			out.Items = append(out.Items, val)
		}
		return out, nil
	case Opaque:
		return &pb.Value{Kind: &pb.Value_Opaque{Opaque: &pb.Opaque{Type: x.Type, Repr: x.Repr}}}, nil
	case Ref:
		return &pb.Value{Kind: &pb.Value_Ref{Ref: &pb.Ref{Id: x.ID}}}, nil
	}
	return reflectValue(reflect.ValueOf(v), depth)
}

// reflectValue covers typed slices, arrays, maps and pointers ([]int,
// map[int]string, *float64, ...) that the type switch does not name.
func reflectValue(rv reflect.Value, depth int) (*pb.Value, error) {
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return toValue(nil, depth)
		}
		return toValue(rv.Elem().Interface(), depth+1)
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, rv.Len())
			reflect.Copy(reflect.ValueOf(b), rv)
			return toValue(b, depth)
		}
		items := make([]any, rv.Len())
		for i := range items {
			items[i] = rv.Index(i).Interface()
		}
		return seqValue(&pb.Value{Kind: &pb.Value_List{List: true}}, items, depth)
	case reflect.Map:
		d := make(Dict, 0, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			d = append(d, KV{iter.Key().Interface(), iter.Value().Interface()})
		}
		return toValue(d, depth)
	// Named scalar types (type Celsius float64, ...).
	case reflect.Bool:
		return toValue(rv.Bool(), depth)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return toValue(rv.Int(), depth)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return toValue(rv.Uint(), depth)
	case reflect.Float32, reflect.Float64:
		return toValue(rv.Float(), depth)
	case reflect.String:
		return toValue(rv.String(), depth)
	}
	return nil, invalidArgument("cannot convert Go %T to a Python value", rv.Interface())
}

func intValue(i int64) *pb.Value { return &pb.Value{Kind: &pb.Value_Int{Int: i}} }

// bigValue sends an int64-sized value as `int` and only larger ones as
// `big_int`, the same split the server uses, so equal numbers are equal on
// the wire whatever Go type carried them.
func bigValue(b *big.Int) *pb.Value {
	if b.IsInt64() {
		return intValue(b.Int64())
	}
	return &pb.Value{Kind: &pb.Value_BigInt{BigInt: b.String()}}
}

func seqValue(out *pb.Value, items []any, depth int) (*pb.Value, error) {
	out.Items = make([]*pb.Value, 0, len(items))
	for _, item := range items {
		v, err := toValue(item, depth+1)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, v)
	}
	return out, nil
}

// FromValue converts a wire Value to Go. Mapping (Python -> Go):
//
//	None                 nil
//	bool                 bool
//	int within int64     int64
//	int beyond int64     *big.Int
//	float                float64 (nan and ±inf kept)
//	str                  string
//	bytes, bytearray     []byte
//	list                 []any
//	tuple                Tuple
//	set, frozenset       Set
//	dict, all keys str   map[string]any
//	dict, other keys     Dict (in the dict's order)
//	anything else        Opaque
func FromValue(v *pb.Value) (any, error) {
	if v == nil {
		return nil, fmt.Errorf("pyexec: missing value in response")
	}
	switch k := v.Kind.(type) {
	case *pb.Value_None:
		return nil, nil
	case *pb.Value_Bool:
		return k.Bool, nil
	case *pb.Value_Int:
		return k.Int, nil
	case *pb.Value_BigInt:
		b, ok := new(big.Int).SetString(k.BigInt, 10)
		if !ok {
			return nil, fmt.Errorf("pyexec: malformed big_int %q", k.BigInt)
		}
		return b, nil
	case *pb.Value_Float:
		return k.Float, nil
	case *pb.Value_Str:
		return k.Str, nil
	case *pb.Value_Bytes:
		if k.Bytes == nil {
			return []byte{}, nil
		}
		return k.Bytes, nil
	case *pb.Value_List:
		items, err := fromItems(v.Items)
		return items, err
	case *pb.Value_Tuple:
		items, err := fromItems(v.Items)
		return Tuple(items), err
	case *pb.Value_Set:
		items, err := fromItems(v.Items)
		return Set(items), err
	case *pb.Value_Dict:
		return fromDict(v)
	case *pb.Value_Opaque:
		return Opaque{Type: k.Opaque.GetType(), Repr: k.Opaque.GetRepr()}, nil
	case *pb.Value_Ref:
		return Ref{ID: k.Ref.GetId(), Type: k.Ref.GetType(), Repr: k.Ref.GetRepr()}, nil
	}
	return nil, fmt.Errorf("pyexec: value of unknown kind %T (newer server?)", v.Kind)
}

func fromItems(in []*pb.Value) ([]any, error) {
	out := make([]any, len(in))
	for i, item := range in {
		v, err := FromValue(item)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func fromDict(v *pb.Value) (any, error) {
	if len(v.Keys) != len(v.Items) {
		return nil, fmt.Errorf("pyexec: dict with %d keys and %d values", len(v.Keys), len(v.Items))
	}
	allStr := true
	for _, k := range v.Keys {
		if _, ok := k.Kind.(*pb.Value_Str); !ok {
			allStr = false
			break
		}
	}
	if allStr {
		m := make(map[string]any, len(v.Keys))
		for i, k := range v.Keys {
			val, err := FromValue(v.Items[i])
			if err != nil {
				return nil, err
			}
			m[k.GetStr()] = val
		}
		return m, nil
	}
	d := make(Dict, len(v.Keys))
	for i := range v.Keys {
		k, err := FromValue(v.Keys[i])
		if err != nil {
			return nil, err
		}
		val, err := FromValue(v.Items[i])
		if err != nil {
			return nil, err
		}
		d[i] = KV{k, val}
	}
	return d, nil
}
