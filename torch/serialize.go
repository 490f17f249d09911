package torch

import (
	"fmt"

	"kakusan/torch/safetensors"
)

var stDTypes = map[DType]safetensors.DType{
	Float32: safetensors.F32, Float64: safetensors.F64, BFloat16: safetensors.BF16,
	Float16: safetensors.F16, Int64: safetensors.I64, Int32: safetensors.I32,
	Uint8: safetensors.U8, Bool: safetensors.Bool,
}

// ToSafetensor copies t to host memory in safetensors form.
func ToSafetensor(t *Tensor) safetensors.Tensor {
	d, ok := stDTypes[t.DType()]
	if !ok {
		fail("ToSafetensor", "dtype %s has no safetensors name", t.DType())
	}
	return safetensors.Tensor{DType: d, Shape: t.Shape(), Data: t.Bytes()}
}

// FromSafetensor makes a tensor on dev from a safetensors entry.
func FromSafetensor(st safetensors.Tensor, dev Device) *Tensor {
	if d, ok := dtypeOf(st.DType); ok {
		return FromBytes(st.Data, d, st.Shape, dev)
	}
	fail("FromSafetensor", "dtype %s is not supported", st.DType)
	return nil
}

// SaveFile writes named tensors and metadata to path atomically.
func SaveFile(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	f := &safetensors.File{Tensors: map[string]safetensors.Tensor{}, Metadata: metadata}
	for name, t := range tensors {
		f.Tensors[name] = ToSafetensor(t)
	}
	return safetensors.WriteFile(path, f)
}

// LoadFile reads a safetensors file into tensors on dev, made in the current
// scope (Keep the ones that must outlive it).
func LoadFile(path string, dev Device) (map[string]*Tensor, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Tensor, len(f.Tensors))
	for name, st := range f.Tensors {
		if _, ok := dtypeOf(st.DType); !ok {
			return nil, nil, fmt.Errorf("%s: tensor %q has dtype %s, which kakusan does not load", path, name, st.DType)
		}
		out[name] = FromSafetensor(st, dev)
	}
	return out, f.Metadata, nil
}

func dtypeOf(d safetensors.DType) (DType, bool) {
	for k, v := range stDTypes {
		if v == d {
			return k, true
		}
	}
	return 0, false
}
