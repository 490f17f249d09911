package train

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"kakusan/datasets"
	"kakusan/torch"
)

// perRank are the config keys ranks may set differently: where a rank
// writes, which device and threads it uses, the data's path on its machine
// (the data itself is compared by digest), a latent model's autoencoder
// (rank 0's is broadcast with the other frozen tensors), and what only
// rank 0 does.
var perRank = []string{"name", "out_dir", "device", "threads", "data.dir", "diffusion.autoencoder",
	"train.tensorboard", "train.eval_every", "train.eval_images", "train.eval_judge", "train.init_from", "train.init_from_ema"}

// fingerprint is everything that shapes a rank's training, one "key: value"
// line each, sorted: the resolved config's keys but perRank's, the data's
// geometry and a digest of the training images and labels.
func (l *loop) fingerprint() []string {
	var tree map[string]any
	yaml.Unmarshal(l.c.Marshal(), &tree)
	lines := flatten("", tree, nil)
	g := l.st.Geometry
	lines = append(lines,
		fmt.Sprintf("(geometry): %dx%dx%d, classes %q", g.C, g.H, g.W, g.ClassNames),
		fmt.Sprintf("(training images): %d, digest %x", l.data.train.N, dataDigest(l.data.train)))
	sort.Strings(lines)
	return lines
}

// flatten writes a YAML tree as "a.b.c: value" lines, leaving perRank's
// keys out.
func flatten(prefix string, v any, out []string) []string {
	if m, ok := v.(map[string]any); ok {
		for k, sub := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			if !slices.Contains(perRank, key) {
				out = flatten(key, sub, out)
			}
		}
		return out
	}
	return append(out, fmt.Sprintf("%s: %v", prefix, v))
}

// dataDigest is the SHA-256 of a set's pixels and labels.
func dataDigest(s *datasets.Images) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d %d %d %d\n", s.N, s.C, s.H, s.W)
	h.Write(s.Pixels)
	h.Write(s.Labels)
	return h.Sum(nil)
}

// compareRanks stops a data-parallel job whose ranks would train
// differently: another config value (a learning rate, a seed, which
// splits the data), other images or another geometry. Rank 0's fingerprint
// goes to every rank; a rank that differs names the first differing key
// with both values, and every rank learns that one differed, so all stop
// before training.
func (l *loop) compareRanks() error {
	d := l.dist
	mine := []byte(strings.Join(l.fingerprint(), "\n"))
	size := torch.FromSlice([]float64{float64(len(mine))}, nil).To(l.dev)
	d.g.Broadcast([]*torch.Tensor{size}, 0)
	n := int(size.Float64s()[0])
	theirs := make([]byte, n)
	if d.env.Rank == 0 {
		copy(theirs, mine)
	}
	blob := torch.FromSlice(theirs, nil).To(l.dev)
	d.g.Broadcast([]*torch.Tensor{blob}, 0)
	diff := ""
	if d.env.Rank != 0 {
		diff = firstDifference(strings.Split(string(mine), "\n"), strings.Split(string(blob.Bytes()), "\n"))
	}
	flag := 0.0
	if diff != "" {
		flag = 1
	}
	any := torch.FromSlice([]float64{flag}, nil).To(l.dev)
	d.g.AllReduceMean([]*torch.Tensor{any}, 0)
	switch {
	case diff != "":
		return mismatch{fmt.Errorf("rank %d would train differently from rank 0: %s. Every rank needs the same config, seed and images (they may differ in out_dir, device, threads, data.dir and diffusion.autoencoder)", d.env.Rank, diff)}
	case any.Float64s()[0] > 0:
		return mismatch{fmt.Errorf("rank %d: another rank's config, seed or data differs from rank 0's (its log names the key): every rank needs the same", d.env.Rank)}
	}
	return nil
}

// mismatch is compareRanks' refusal: not a failed collective.
type mismatch struct{ error }

// firstDifference names the first key whose line differs between a rank's
// fingerprint and rank 0's, with both values ("" when they are the same).
func firstDifference(mine, rank0 []string) string {
	value := func(lines []string) map[string]string {
		m := map[string]string{}
		for _, l := range lines {
			k, v, _ := strings.Cut(l, ": ")
			m[k] = v
		}
		return m
	}
	a, b := value(mine), value(rank0)
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { // the config's keys first, then (geometry) and (training images)
		pi, pj := strings.HasPrefix(keys[i], "("), strings.HasPrefix(keys[j], "(")
		if pi != pj {
			return pj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		va, oka := a[k]
		vb, okb := b[k]
		switch {
		case !oka:
			return fmt.Sprintf("%s is %s on rank 0 and unset here", k, vb)
		case !okb:
			return fmt.Sprintf("%s is %s here and unset on rank 0", k, va)
		case va != vb:
			return fmt.Sprintf("%s is %s here, %s on rank 0", k, va, vb)
		}
	}
	return ""
}
