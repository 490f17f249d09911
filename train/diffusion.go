package train

import (
	"fmt"

	"kakusan/models/nn"
	"kakusan/models/unet"
	"kakusan/sample"
	"kakusan/torch"
)

func (u *UNetConfig) model() unet.Config {
	return unet.Config{Channels: 1, Width: int64(u.Width), Levels: int64(u.Levels), EmbDim: int64(u.EmbDim), Classes: int64(u.Classes),
		Norm: u.Norm, Groups: int64(u.Groups), Act: u.Act, Dropout: u.Dropout, Attention: u.Attention}
}

func (d *DiffusionConfig) schedule() (*sample.Schedule, error) {
	switch d.Schedule {
	case "linear":
		return sample.Linear(d.Timesteps, d.BetaStart, d.BetaEnd)
	case "cosine":
		return sample.Cosine(d.Timesteps)
	}
	return nil, fmt.Errorf("schedule must be linear or cosine, got %q", d.Schedule)
}

// DiffusionModel is a U-Net trained to predict the noise (or v) of the
// forward process, with classifier-free guidance when it has classes.
type DiffusionModel struct {
	Net   *unet.UNet
	Sched *sample.Schedule
	Cfg   *DiffusionConfig
	dev   torch.Device
}

func newDiffusion(c *Config, dev torch.Device) (*DiffusionModel, error) {
	net, err := unet.New(c.UNet.model(), dev)
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	s, err := c.Diffusion.schedule()
	if err != nil {
		net.Free()
		return nil, fmt.Errorf("diffusion: %w", err)
	}
	return &DiffusionModel{net, s, c.Diffusion, dev}, nil
}

func (m *DiffusionModel) Module() *nn.Module { return m.Net.Module }

// Conditional reports whether the network takes labels.
func (m *DiffusionModel) Conditional() bool { return m.Net.Cfg.Classes > 0 }

// Loss draws t uniformly from 1..T and the noise, drops labels with
// probability cond_drop (per image, or for the whole batch), and returns the
// mean squared error of the predicted noise (or v).
func (m *DiffusionModel) Loss(x, y *torch.Tensor) *torch.Tensor {
	if m.Cfg.Centered {
		x = x.MulScalar(2).SubScalar(1)
	}
	n := x.Size(0)
	t := torch.RandInt(1, int64(m.Sched.T)+1, []int64{n}, m.dev)
	eps := torch.RandnLike(x)
	xt := m.Sched.QSample(x, t, eps)
	var keep *torch.Tensor
	if m.Conditional() {
		switch m.Cfg.CondDropMode {
		case "batch":
			keep = torch.Full([]int64{n}, 1, m.dev)
			if torch.Rand([]int64{1}).Item() < m.Cfg.CondDrop {
				keep = torch.ZerosLike(keep)
			}
		default:
			keep = torch.Rand([]int64{n}, m.dev).GeScalar(m.Cfg.CondDrop).To(torch.Float32)
		}
	} else {
		y = nil
	}
	target := eps
	if m.Cfg.Prediction == "v" {
		target = m.Sched.VTarget(x, t, eps)
	}
	return torch.MSELoss(m.Net.Forward(xt, t, y, keep), target, torch.ReduceMean)
}

// SampleJob is one batch of a sampling job.
type SampleJob struct {
	Images   []int   // the images' indices in the job, which seed their noise
	Labels   []int64 // one per image; ignored by unconditional models
	Seed     uint64
	Sampler  string // ddim or ddpm
	Steps    int    // ddim
	Eta      float64
	Guidance float64
}

// Generate runs the sampler for a batch in eval mode without gradients and
// returns images (B, 1, 28, 28) in [0, 1].
func (m *DiffusionModel) Generate(j SampleJob) (*torch.Tensor, error) {
	training := m.Net.Training()
	m.Net.SetTraining(false)
	defer m.Net.SetTraining(training)
	var x *torch.Tensor
	var err error
	torch.NoGrad(func() {
		var y *torch.Tensor
		if m.Conditional() {
			for _, l := range j.Labels {
				if l < 0 || l >= m.Net.Cfg.Classes {
					err = fmt.Errorf("label %d out of range: the model has classes 0-%d", l, m.Net.Cfg.Classes-1)
					return
				}
			}
			y = torch.FromSlice(j.Labels, nil, m.dev)
		}
		pred := m.Sched.Guided(m.Net.Forward, y, j.Guidance, m.Cfg.Prediction == "v")
		noise := sample.ImageNoise(j.Seed, j.Images, []int64{1, 28, 28}, m.dev)
		switch j.Sampler {
		case "ddpm":
			x = m.Sched.DDPM(pred, noise)
		case "ddim":
			x, err = m.Sched.DDIM(pred, noise, j.Steps, j.Eta)
		default:
			err = fmt.Errorf("unknown sampler %q (want ddim or ddpm)", j.Sampler)
		}
		if err == nil && m.Cfg.Centered {
			x = x.AddScalar(1).DivScalar(2)
		}
	})
	return x, err
}

// Sample draws n images for a training-time grid: classes in rows, with
// the configured sampler and guidance.
func (m *DiffusionModel) Sample(n int64) *torch.Tensor {
	j := SampleJob{Seed: gridSeed, Sampler: m.Cfg.Sampler, Steps: m.Cfg.SampleSteps, Eta: m.Cfg.Eta, Guidance: m.Cfg.Guidance}
	classes := max(m.Net.Cfg.Classes, 1)
	for k := range n {
		j.Images = append(j.Images, int(k))
		j.Labels = append(j.Labels, k*classes/n)
	}
	x, err := m.Generate(j)
	if err != nil {
		panic(&torch.Error{Op: "DiffusionModel.Sample", Msg: err.Error()})
	}
	return x
}

// GridCols lays a grid of n samples out a class to a row.
func (m *DiffusionModel) GridCols(n int) int {
	if c := int(m.Net.Cfg.Classes); c > 0 && n%c == 0 {
		return n / c
	}
	return 0
}
