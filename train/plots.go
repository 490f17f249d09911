package train

import (
	"bytes"
	"image/color"
	"kakusan/internal/atomic"
	"math"
	"strconv"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var fitColor = color.RGBA{R: 200, G: 30, B: 30, A: 255}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	return p
}

// savePlot renders p as a PNG, atomically.
func savePlot(p *plot.Plot, path string) error {
	w, err := p.WriterTo(7*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return err
	}
	return atomic.WriteFile(path, buf.Bytes())
}

// histWithDensity is a normalised histogram of xs under the curve pdf.
func histWithDensity(title, xlabel, what string, xs []float64, pdf func(float64) float64, peak float64, path string) error {
	p := newPlot(title, xlabel, "density")
	h, err := plotter.NewHist(plotter.Values(xs), 60)
	if err != nil {
		return err
	}
	h.Normalize(1)
	h.FillColor = color.RGBA{R: 110, G: 150, B: 210, A: 255}
	h.LineStyle.Width = 0
	f := plotter.NewFunction(pdf)
	f.Samples = 400
	f.Color = fitColor
	f.Width = vg.Points(2)
	p.Add(h, f)
	p.Y.Max = math.Max(p.Y.Max, 1.05*peak)
	p.Legend.Add(what, h)
	p.Legend.Add("fitted density", f)
	p.Legend.Top = true
	return savePlot(p, path)
}

func points(xs [][]float64) plotter.XYs {
	out := make(plotter.XYs, len(xs))
	for i, x := range xs {
		out[i] = plotter.XY{X: x[0], Y: x[1]}
	}
	return out
}

func scatter(xy plotter.XYs, c color.Color, radius float64) (*plotter.Scatter, error) {
	s, err := plotter.NewScatter(xy)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle.Color = c
	s.GlyphStyle.Radius = vg.Points(radius)
	s.GlyphStyle.Shape = draw.CircleGlyph{}
	return s, nil
}

// densityGrid samples a 2-D density on a grid for contour plots.
type densityGrid struct {
	xs, ys []float64
	z      [][]float64
}

func newDensityGrid(pts [][]float64, logpdf func([]float64) float64, n int) *densityGrid {
	minX, maxX, minY, maxY := bounds(pts)
	padX, padY := 0.1*(maxX-minX), 0.1*(maxY-minY)
	g := &densityGrid{}
	for i := range n {
		g.xs = append(g.xs, minX-padX+(maxX-minX+2*padX)*float64(i)/float64(n-1))
		g.ys = append(g.ys, minY-padY+(maxY-minY+2*padY)*float64(i)/float64(n-1))
	}
	g.z = make([][]float64, n)
	for c := range n {
		g.z[c] = make([]float64, n)
		for r := range n {
			g.z[c][r] = math.Exp(logpdf([]float64{g.xs[c], g.ys[r]}))
		}
	}
	return g
}

func (g *densityGrid) Dims() (int, int)   { return len(g.xs), len(g.ys) }
func (g *densityGrid) Z(c, r int) float64 { return g.z[c][r] }
func (g *densityGrid) X(c int) float64    { return g.xs[c] }
func (g *densityGrid) Y(r int) float64    { return g.ys[r] }
func (g *densityGrid) max() (m float64) {
	for _, col := range g.z {
		for _, v := range col {
			m = math.Max(m, v)
		}
	}
	return m
}

func bounds(pts [][]float64) (minX, maxX, minY, maxY float64) {
	minX, minY = math.Inf(1), math.Inf(1)
	maxX, maxY = math.Inf(-1), math.Inf(-1)
	for _, p := range pts {
		minX, maxX = math.Min(minX, p[0]), math.Max(maxX, p[0])
		minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
	}
	return
}

// scatterWithContours draws points and the contours of a fitted 2-D density.
func scatterWithContours(title, xl, yl, what string, pts [][]float64, logpdf func([]float64) float64, path string) error {
	p := newPlot(title, xl, yl)
	s, err := scatter(points(pts), color.NRGBA{R: 60, G: 90, B: 160, A: 70}, 1)
	if err != nil {
		return err
	}
	g := newDensityGrid(pts, logpdf, 120)
	top := g.max()
	levels := []float64{0.02 * top, 0.1 * top, 0.3 * top, 0.6 * top, 0.9 * top}
	c := plotter.NewContour(g, levels, palette.Heat(len(levels), 1))
	c.LineStyles[0].Width = vg.Points(1.5)
	p.Add(s, c)
	p.Legend.Add(what, s)
	return savePlot(p, path)
}

// ellipse is the k-sigma contour of a 2-D normal.
func ellipse(mean []float64, cov [][]float64, k float64) plotter.XYs {
	s := mat.NewSymDense(2, []float64{cov[0][0], cov[0][1], cov[1][0], cov[1][1]})
	var eig mat.EigenSym
	eig.Factorize(s, true)
	vals := eig.Values(nil)
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	out := make(plotter.XYs, 0, 101)
	for i := 0; i <= 100; i++ {
		th := 2 * math.Pi * float64(i) / 100
		a, b := k*math.Sqrt(math.Max(vals[0], 0))*math.Cos(th), k*math.Sqrt(math.Max(vals[1], 0))*math.Sin(th)
		out = append(out, plotter.XY{
			X: mean[0] + a*vecs.At(0, 0) + b*vecs.At(0, 1),
			Y: mean[1] + a*vecs.At(1, 0) + b*vecs.At(1, 1),
		})
	}
	return out
}

// componentScatter draws points coloured by component with each
// component's 1- and 2-sigma ellipses.
func componentScatter(title, xl, yl string, pts [][]float64, labels []int, means [][]float64, covs [][][]float64, path string) error {
	p := newPlot(title, xl, yl)
	groups := make([]plotter.XYs, len(means))
	for i, x := range pts {
		groups[labels[i]] = append(groups[labels[i]], plotter.XY{X: x[0], Y: x[1]})
	}
	for k := range means {
		col := plotutil.Color(k)
		if len(groups[k]) > 0 {
			s, err := scatter(groups[k], col, 1.5)
			if err != nil {
				return err
			}
			p.Add(s)
			p.Legend.Add("component "+itoa(k), s)
		}
		for _, sigma := range []float64{1, 2} {
			l, err := plotter.NewLine(ellipse(means[k], covs[k], sigma))
			if err != nil {
				return err
			}
			l.Color = col
			l.Width = vg.Points(2)
			if sigma == 2 {
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(l)
		}
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return savePlot(p, path)
}

// curve draws y against its index, for the log-likelihood per EM iteration.
func curve(title, xl, yl string, ys []float64, path string) error {
	xs := make([]float64, len(ys))
	for i := range xs {
		xs[i] = float64(i)
	}
	return stepCurve(title, xl, yl, xs, ys, path)
}

// stepCurve draws ys against xs, for loss curves.
func stepCurve(title, xl, yl string, xs, ys []float64, path string) error {
	p := newPlot(title, xl, yl)
	xy := make(plotter.XYs, len(ys))
	for i, y := range ys {
		xy[i] = plotter.XY{X: xs[i], Y: y}
	}
	l, s, err := plotter.NewLinePoints(xy)
	if err != nil {
		return err
	}
	l.Color, s.Color = fitColor, fitColor
	p.Add(l, s)
	return savePlot(p, path)
}

func itoa(i int) string { return strconv.Itoa(i) }
