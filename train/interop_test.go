package train

import (
	"os/exec"
	"path/filepath"
	"testing"

	"kakusan/models"
	"kakusan/torch"
)

// TestPyTorchInterop runs the PyTorch twins of the VAEs and the KL
// autoencoder (scripts/pt_models.py,
// Debian's python3-torch): a kakusan checkpoint must load into the PyTorch
// module with strict matching and compute the same reconstruction, and a
// PyTorch state_dict saved as safetensors must load here and do the same.
func TestPyTorchInterop(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		t.Skip("Debian's python3-torch is not installed (scripts/setup.sh installs it)")
	}
	for _, kind := range []string{"vae", "hvae", "autoencoder"} {
		dir := t.TempDir()
		c := neuralConfig(t, kind, "train.max_steps=20")
		shape := []int64{5, 784} // the VAEs' twins take flat images
		atol := 1e-6
		if kind == "autoencoder" {
			shape = []int64{5, 1, 28, 28}
			atol = 1e-5 // fourteen convolutions deep: float32 sums in another order
		}
		r, err := Train(c, Options{Out: filepath.Join(dir, "run")})
		if err != nil {
			t.Fatal(err)
		}
		err = torch.Do(func() error {
			torch.ManualSeed(3)
			x := torch.Rand(shape)
			if err := torch.SaveFile(filepath.Join(dir, "in.safetensors"), map[string]*torch.Tensor{"x": x}, nil); err != nil {
				return err
			}
			cmd := exec.Command(py, "../scripts/pt_interop.py", kind, filepath.Join(r.Dir, "checkpoints", "latest.safetensors"), filepath.Join(dir, "in.safetensors"), dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: pt_interop.py: %v\n%s", kind, err, out)
			}
			reconstruct := func(m models.Model, x *torch.Tensor) *torch.Tensor {
				return m.(models.Reconstructor).Reconstruct(x)
			}
			// Direction 1: our checkpoint in PyTorch.
			ours, ck, err := models.Load(r.Dir, torch.CPU, false)
			if err != nil {
				return err
			}
			defer models.Free(ours)
			theirs, _, err := torch.LoadFile(filepath.Join(dir, "from_go.safetensors"), torch.CPU)
			if err != nil {
				return err
			}
			if want := reconstruct(ours, x); !want.AllClose(theirs["y"], 1e-5, atol) {
				t.Errorf("%s: PyTorch's output from our checkpoint differs from ours", kind)
			}
			// Direction 2: PyTorch's state_dict here.
			sd, _, err := torch.LoadFile(filepath.Join(dir, "pytorch.safetensors"), torch.CPU)
			if err != nil {
				return err
			}
			fresh, err := models.New(c, ck.Geometry, torch.CPU)
			if err != nil {
				return err
			}
			defer models.Free(fresh)
			if err := fresh.Module().Load(sd); err != nil {
				return err
			}
			ref, _, err := torch.LoadFile(filepath.Join(dir, "pytorch_out.safetensors"), torch.CPU)
			if err != nil {
				return err
			}
			if got := reconstruct(fresh, x); !got.AllClose(ref["y"], 1e-5, atol) {
				t.Errorf("%s: our output from PyTorch's state_dict differs from PyTorch's by up to %g", kind, got.Sub(ref["y"]).Abs().Max().Item())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
