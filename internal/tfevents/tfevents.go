// Package tfevents writes and reads TensorBoard's event files: serialized
// Event messages (tensorflow/core/util/event.proto) in TFRecord frames (a
// little-endian uint64 length, the length's masked CRC-32C, the data, the
// data's masked CRC-32C).
//
// The messages are encoded with Go's protobuf module (protowire) from the
// field numbers of TensorBoard's Event, Summary, Summary.Value,
// Summary.Image, SummaryMetadata, TensorProto and SessionLog; event.proto
// in this folder declares the same messages for other readers (a test reads
// the files back with Python's protobuf runtime).
package tfevents

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"kakusan/internal/files"
)

// Field numbers of TensorBoard's messages.
const (
	eventWallTime    = 1 // double
	eventStep        = 2 // int64
	eventFileVersion = 3 // string
	eventSummary     = 5 // Summary
	eventSessionLog  = 7 // SessionLog

	summaryValue = 1 // repeated Summary.Value

	valueTag      = 1 // string
	valueSimple   = 2 // float
	valueImage    = 4 // Summary.Image
	valueTensor   = 8 // TensorProto
	valueMetadata = 9 // SummaryMetadata

	imageHeight     = 1 // int32
	imageWidth      = 2 // int32
	imageColorspace = 3 // int32: 1 grey, 3 RGB, 4 RGBA
	imageEncoded    = 4 // bytes: PNG

	metadataPluginData = 1 // SummaryMetadata.PluginData
	pluginName         = 1 // string

	tensorDtype    = 1 // DataType enum
	tensorShape    = 2 // TensorShapeProto (empty: a scalar)
	tensorStringV  = 8 // repeated bytes
	dtString       = 7 // DT_STRING
	sessionStatus  = 1 // SessionLog.SessionStatus
	sessionStart   = 1 // START
	fileVersion    = "brain.Event:2"
	maxRecordBytes = 256 << 20 // a record's length at most, read back
	maxFileBytes   = 64 << 30  // an event file's size at most, read back
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is TFRecord's masked CRC-32C of b.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// Writer appends events to one new event file.
type Writer struct {
	Path string
	f    *os.File
	w    *bufio.Writer
	now  func() time.Time
}

var fileCount atomic.Int64

// Create starts a new event file in dir, named as TensorBoard's writers name
// them (events.out.tfevents.TIME.HOST.PID.N), with its file_version event.
// TensorBoard reads a folder's files in the order of their names, so TIME
// is made later than any file's already there (a resume in the same second).
func Create(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	host = strings.ReplaceAll(host, "/", "_")
	stamp := time.Now().Unix()
	earlier, _ := filepath.Glob(filepath.Join(dir, "events.out.tfevents.*"))
	for _, f := range earlier {
		var t int64
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(f), "events.out.tfevents."), "%d", &t); err == nil && t >= stamp {
			stamp = t + 1
		}
	}
	name := fmt.Sprintf("events.out.tfevents.%010d.%s.%d.%d", stamp, host, os.Getpid(), fileCount.Add(1))
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	w := &Writer{Path: f.Name(), f: f, w: bufio.NewWriter(f), now: time.Now}
	if err := w.event(0, func(b []byte) []byte {
		return protowire.AppendString(protowire.AppendTag(b, eventFileVersion, protowire.BytesType), fileVersion)
	}); err != nil {
		f.Close()
		return nil, err
	}
	return w, w.Flush()
}

// event writes one Event at step whose fields past wall_time and step body
// appends.
func (w *Writer) event(step int64, body func([]byte) []byte) error {
	wall := float64(w.now().UnixMicro()) / 1e6
	b := protowire.AppendTag(nil, eventWallTime, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(wall))
	b = protowire.AppendTag(b, eventStep, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(step))
	return w.record(body(b))
}

// record frames data as a TFRecord.
func (w *Writer) record(data []byte) error {
	var head [12]byte
	binary.LittleEndian.PutUint64(head[:8], uint64(len(data)))
	binary.LittleEndian.PutUint32(head[8:], maskedCRC(head[:8]))
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], maskedCRC(data))
	w.w.Write(head[:])
	w.w.Write(data)
	_, err := w.w.Write(tail[:])
	return err
}

// summary writes an Event at step holding one Summary.Value whose fields
// value appends.
func (w *Writer) summary(step int64, value func([]byte) []byte) error {
	return w.event(step, func(b []byte) []byte {
		v := value(nil)
		s := protowire.AppendBytes(protowire.AppendTag(nil, summaryValue, protowire.BytesType), v)
		return protowire.AppendBytes(protowire.AppendTag(b, eventSummary, protowire.BytesType), s)
	})
}

func appendTag(b []byte, tag string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, valueTag, protowire.BytesType), tag)
}

// Scalar writes a scalar (Summary.Value.simple_value).
func (w *Writer) Scalar(tag string, step int64, v float64) error {
	return w.summary(step, func(b []byte) []byte {
		b = appendTag(b, tag)
		b = protowire.AppendTag(b, valueSimple, protowire.Fixed32Type)
		return protowire.AppendFixed32(b, math.Float32bits(float32(v)))
	})
}

// Image writes a PNG of height x width pixels with channels 1 (grey), 3
// (RGB) or 4 (RGBA) (Summary.Image).
func (w *Writer) Image(tag string, step int64, png []byte, height, width, channels int) error {
	var img []byte
	for _, f := range [][2]int{{imageHeight, height}, {imageWidth, width}, {imageColorspace, channels}} {
		img = protowire.AppendVarint(protowire.AppendTag(img, protowire.Number(f[0]), protowire.VarintType), uint64(f[1]))
	}
	img = protowire.AppendBytes(protowire.AppendTag(img, imageEncoded, protowire.BytesType), png)
	return w.summary(step, func(b []byte) []byte {
		b = appendTag(b, tag)
		return protowire.AppendBytes(protowire.AppendTag(b, valueImage, protowire.BytesType), img)
	})
}

// Text writes markdown text for TensorBoard's text plugin: a scalar string
// tensor whose metadata names the plugin.
func (w *Writer) Text(tag string, step int64, text string) error {
	plugin := protowire.AppendString(protowire.AppendTag(nil, pluginName, protowire.BytesType), "text")
	meta := protowire.AppendBytes(protowire.AppendTag(nil, metadataPluginData, protowire.BytesType), plugin)
	tensor := protowire.AppendVarint(protowire.AppendTag(nil, tensorDtype, protowire.VarintType), dtString)
	tensor = protowire.AppendBytes(protowire.AppendTag(tensor, tensorShape, protowire.BytesType), nil)
	tensor = protowire.AppendString(protowire.AppendTag(tensor, tensorStringV, protowire.BytesType), text)
	return w.summary(step, func(b []byte) []byte {
		b = appendTag(b, tag)
		b = protowire.AppendBytes(protowire.AppendTag(b, valueTensor, protowire.BytesType), tensor)
		return protowire.AppendBytes(protowire.AppendTag(b, valueMetadata, protowire.BytesType), meta)
	})
}

// Restart writes SessionLog START at step: TensorBoard then discards the
// events of earlier files at step and later (a resumed run's convention).
func (w *Writer) Restart(step int64) error {
	return w.event(step, func(b []byte) []byte {
		s := protowire.AppendVarint(protowire.AppendTag(nil, sessionStatus, protowire.VarintType), sessionStart)
		return protowire.AppendBytes(protowire.AppendTag(b, eventSessionLog, protowire.BytesType), s)
	})
}

// Flush writes what is buffered to the file, so a TensorBoard reading it
// sees every event written so far.
func (w *Writer) Flush() error { return w.w.Flush() }

// Close flushes, syncs and closes the file.
func (w *Writer) Close() error {
	err := w.w.Flush()
	if serr := w.f.Sync(); err == nil {
		err = serr
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadRecords reads an event file's records, checking every length and
// CRC; a torn last record (a writer killed mid-write) ends the file
// without an error, as TensorBoard reads it.
func ReadRecords(path string) ([][]byte, error) {
	f, err := files.Open(path, maxFileBytes) // a regular file: a FIFO would block
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var out [][]byte
	for {
		var head [12]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return out, nil
			}
			return nil, err
		}
		n := binary.LittleEndian.Uint64(head[:8])
		if binary.LittleEndian.Uint32(head[8:]) != maskedCRC(head[:8]) {
			return nil, fmt.Errorf("%s: record %d: the length's CRC does not match", path, len(out))
		}
		if n > maxRecordBytes {
			return nil, fmt.Errorf("%s: record %d: %d bytes, more than %d", path, len(out), n, maxRecordBytes)
		}
		data := make([]byte, n+4)
		if _, err := io.ReadFull(r, data); err != nil {
			return out, nil // torn
		}
		if binary.LittleEndian.Uint32(data[n:]) != maskedCRC(data[:n]) {
			return nil, fmt.Errorf("%s: record %d: the data's CRC does not match", path, len(out))
		}
		out = append(out, data[:n])
	}
}

// Step is an event's step (0 where it has none).
func Step(event []byte) (int64, error) {
	var step int64
	err := eachField(event, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) {
		if num == eventStep && typ == protowire.VarintType {
			step = int64(v)
		}
	})
	return step, err
}

// eachField calls f with each top-level field of a message: its varint or
// fixed value, or its bytes.
func eachField(m []byte, f func(num protowire.Number, typ protowire.Type, v uint64, b []byte)) error {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m = m[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(m)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(m)
		case protowire.Fixed32Type:
			var v32 uint32
			v32, n = protowire.ConsumeFixed32(m)
			v = uint64(v32)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(m)
		default:
			n = protowire.ConsumeFieldValue(num, typ, m)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		f(num, typ, v, b)
		m = m[n:]
	}
	return nil
}

// withStep is event with its step replaced.
func withStep(event []byte, step int64) ([]byte, error) {
	var out []byte
	err := eachField(event, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) {
		out = protowire.AppendTag(out, num, typ)
		switch {
		case num == eventStep:
			out = protowire.AppendVarint(out, uint64(step))
		case typ == protowire.VarintType:
			out = protowire.AppendVarint(out, v)
		case typ == protowire.Fixed64Type:
			out = protowire.AppendFixed64(out, v)
		case typ == protowire.Fixed32Type:
			out = protowire.AppendFixed32(out, uint32(v))
		default:
			out = protowire.AppendBytes(out, b)
		}
	})
	return out, err
}

// Rewrite rewrites the event file at path keeping the events for which
// keep says true, each with the step it returns (keep hears whether the
// event is a SessionLog START; the file_version event stays as it is). The
// file is replaced whole through a temporary file in its folder whose name
// TensorBoard does not read (no "tfevents" in it), removed on failure.
func Rewrite(path string, keep func(step int64, start bool) (int64, bool)) error {
	records, err := ReadRecords(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), ".rewrite.tmp-"+strconv.Itoa(os.Getpid()))
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := &Writer{Path: tmp, f: f, w: bufio.NewWriter(f)}
	fail := func(err error) error {
		w.Close()
		os.Remove(tmp)
		return err
	}
	for i, r := range records {
		if i > 0 { // record 0 is the file version
			e, err := Parse(r)
			if err != nil {
				return fail(fmt.Errorf("%s: record %d: %w", path, i, err))
			}
			s, ok := keep(e.Step, e.Kind == "start")
			if !ok {
				continue
			}
			if r, err = withStep(r, s); err != nil {
				return fail(err)
			}
		}
		w.record(r)
	}
	if err := w.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Event is what a reader sees of an event kakusan writes.
type Event struct {
	Step    int64
	Kind    string  // "version", "scalar", "image", "text" or "start" (SessionLog START)
	Tag     string  // summaries'
	Value   float64 // a scalar's
	Data    []byte  // an image's PNG, or a text's bytes
	H, W, C int     // an image's
}

// Parse decodes an event record as far as kakusan's events go.
func Parse(record []byte) (Event, error) {
	var e Event
	var summary, session []byte
	err := eachField(record, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) {
		switch num {
		case eventStep:
			e.Step = int64(v)
		case eventFileVersion:
			e.Kind = "version"
		case eventSummary:
			summary = b
		case eventSessionLog:
			session = b
		}
	})
	if err != nil {
		return e, err
	}
	if session != nil {
		err = eachField(session, func(num protowire.Number, _ protowire.Type, v uint64, _ []byte) {
			if num == sessionStatus && v == sessionStart {
				e.Kind = "start"
			}
		})
		return e, err
	}
	var value []byte
	if err := eachField(summary, func(num protowire.Number, _ protowire.Type, _ uint64, b []byte) {
		if num == summaryValue {
			value = b
		}
	}); err != nil || value == nil {
		return e, err
	}
	return e, eachField(value, func(num protowire.Number, _ protowire.Type, v uint64, b []byte) {
		switch num {
		case valueTag:
			e.Tag = string(b)
		case valueSimple:
			e.Kind, e.Value = "scalar", float64(math.Float32frombits(uint32(v)))
		case valueImage:
			e.Kind = "image"
			eachField(b, func(num protowire.Number, _ protowire.Type, v uint64, b []byte) {
				switch num {
				case imageHeight:
					e.H = int(v)
				case imageWidth:
					e.W = int(v)
				case imageColorspace:
					e.C = int(v)
				case imageEncoded:
					e.Data = b
				}
			})
		case valueTensor:
			e.Kind = "text"
			eachField(b, func(num protowire.Number, _ protowire.Type, _ uint64, b []byte) {
				if num == tensorStringV {
					e.Data = b
				}
			})
		}
	})
}

// View is what TensorBoard shows of the event files of one run folder,
// read in order (their names sort by creation time): each SessionLog START
// discards the events read so far at its step or later, as TensorBoard's
// purge of orphaned data does after a restart.
func View(paths []string) ([]Event, error) {
	var out []Event
	for _, p := range paths {
		records, err := ReadRecords(p)
		if err != nil {
			return nil, err
		}
		for i, r := range records {
			e, err := Parse(r)
			if err != nil {
				return nil, fmt.Errorf("%s: record %d: %w", p, i, err)
			}
			if e.Kind == "start" {
				kept := out[:0]
				for _, old := range out {
					if old.Kind == "version" || old.Step < e.Step {
						kept = append(kept, old)
					}
				}
				out = kept
			}
			out = append(out, e)
		}
	}
	return out, nil
}
