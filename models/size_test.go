package models

import (
	"path/filepath"
	"strings"
	"testing"

	"kakusan/models/unet"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

// A U-Net too big to build is refused from the config, before anything is
// allocated: from a --set, and from a checkpoint whose embedded config
// asks for it (a 2.6 MB checkpoint saying unet.width: 4096 grew to 5.5 GB
// and ended in libtorch's allocation error), for both architectures.
func TestHostileUNetSizeIsRefused(t *testing.T) {
	for _, sets := range [][]string{{"unet.width=4096"}, {"unet.arch=adm", "unet.norm=group", "unet.width=4096", "unet.groups=32"}, {"unet.width=1024", "unet.levels=4"}} {
		_, err := ParseConfig("x.yaml", []byte("model: diffusion\n"), sets)
		if err == nil || !strings.Contains(err.Error(), "unet.width: ") || !strings.Contains(err.Error(), "parameters") || !strings.Contains(err.Error(), "more than the 268435456") {
			t.Errorf("--set %v: %v, want unet.width refused with its parameter count", sets, err)
		}
	}
	// The checkpoint: a small model's, its embedded config then edited.
	path := filepath.Join(t.TempDir(), "hostile.safetensors")
	c, err := ParseConfig("x.yaml", []byte("model: diffusion\n"), []string{"unet.width=8"})
	if err != nil {
		t.Fatal(err)
	}
	g := Geometry{C: 1, H: 28, W: 28, Classes: 10}
	torchtest.Run(t, func() {
		m, err := New(c, g, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer Free(m)
		Section[*unet.Config](c, "unet").Width = 4096
		ck := NewCheckpoint(c, g, 1, 0, 1)
		ck.PutModel(m, "")
		if err := ck.Write(path); err != nil {
			t.Fatal(err)
		}
	})
	live := torch.LiveTensors()
	torchtest.Run(t, func() {
		ck, err := ReadCheckpoint(path, torch.CPU)
		if err == nil {
			ck.Free()
			t.Error("a checkpoint asking for unet.width 4096 was read") // not Load, which would build it
			return
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "unet.width: 4096") || !strings.Contains(err.Error(), "parameters") {
			t.Errorf("ReadCheckpoint: %v, want the file and unet.width named", err)
		}
		if _, _, err := Load(path, torch.CPU, true); err == nil || !strings.Contains(err.Error(), "unet.width: 4096") {
			t.Errorf("Load: %v", err)
		}
	})
	if n := torch.LiveTensors() - live; n > 0 {
		t.Errorf("%d tensors left behind", n)
	}
}

// A training batch whose step cannot fit in the memory this process may
// use is refused, naming train.batch_size, the figures and a batch that
// fits, before the model is built; loading the same config's checkpoint to
// draw from it (models.Load) does not check a batch it does not train.
func TestTrainingBatchIsBoundedByMemory(t *testing.T) {
	mem, _ := torch.HostMemory()
	if mem <= 0 {
		t.Skip("no memory figure here")
	}
	c, err := ParseConfig("x.yaml", []byte("model: diffusion\n"), []string{"unet.width=8", "train.batch_size=65536"})
	if err != nil {
		t.Fatal(err)
	}
	big := Geometry{C: 3, H: 256, W: 256, Classes: 2}
	torchtest.Run(t, func() {
		live := torch.LiveTensors()
		m, err := New(c, big, torch.CPU)
		if err == nil {
			Free(m)
			t.Error("a batch of 65536 images of 3x256x256 accepted")
			return
		}
		for _, want := range []string{"train.batch_size: 65536", "3x256x256", "more than the", "at most"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v: want %q", err, want)
			}
		}
		if n := torch.LiveTensors() - live; n > 0 {
			t.Errorf("%d tensors made before refusing", n)
		}
		// Drawing from a checkpoint of that config builds the network.
		m, err = Build(c, big, torch.CPU, &Checkpoint{Config: c})
		if err != nil {
			t.Fatalf("building from the checkpoint's own config: %v", err)
		}
		Free(m)
		// A batch that fits is built, for training too.
		c.Train.BatchSize = 16
		m, err = New(c, big, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		Free(m)
	})
	// Every model's batch is bounded, not only the U-Net's.
	ae, err := ParseConfig("x.yaml", []byte("model: autoencoder\n"), []string{"train.batch_size=65536"})
	if err != nil {
		t.Fatal(err)
	}
	huge := Geometry{C: 3, H: 4096, W: 4096}
	if err := CheckTrainingBatch(ae, huge, torch.CPU); err == nil || !strings.Contains(err.Error(), "train.batch_size: 65536") {
		t.Errorf("autoencoder on 65536 images of 3x4096x4096: %v", err)
	}
}
