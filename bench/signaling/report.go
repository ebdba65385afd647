package main

import (
	"fmt"
	"io"
	"log"
	"slices"
	"strings"
	"time"
)

// report collects the figures and prints them as Markdown tables.
type report struct {
	rows     []row
	notes    []string
	sections []string
}

type row struct{ figure, measured, target, verdict string }

// add records a figure; ok is nil for a figure without a target.
func (r *report) add(figure, measured, target string, ok *bool) {
	v := ""
	if ok != nil {
		v = "pass"
		if !*ok {
			v = "**FAIL**"
		}
	}
	r.rows = append(r.rows, row{figure, measured, target, v})
	log.Printf("%s: %s (target %s) %s", figure, measured, orDash(target), v)
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// section adds a block of Markdown printed after the table.
func (r *report) section(s string) { r.sections = append(r.sections, s) }

func (r *report) print(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| figure | measured | target | |")
	fmt.Fprintln(w, "|---|---:|---|---|")
	for _, x := range r.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.figure, x.measured, orDash(x.target), x.verdict)
	}
	fmt.Fprintln(w)
	for _, s := range r.sections {
		fmt.Fprintln(w, s)
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "- "+n)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func boolp(b bool) *bool { return &b }

// percentile of sorted values (nearest rank).
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return sorted[i]
}

// dist summarises latency samples (ns).
type dist struct {
	n                       int
	p50, p90, p99, p999, mx time.Duration
}

func summarize(samples []int64) dist {
	slices.Sort(samples)
	d := dist{n: len(samples)}
	if len(samples) == 0 {
		return d
	}
	d.p50 = time.Duration(percentile(samples, 50))
	d.p90 = time.Duration(percentile(samples, 90))
	d.p99 = time.Duration(percentile(samples, 99))
	d.p999 = time.Duration(percentile(samples, 99.9))
	d.mx = time.Duration(samples[len(samples)-1])
	return d
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func (d dist) String() string {
	return fmt.Sprintf("n=%d p50 %s, p90 %s, p99 %s, p99.9 %s, max %s", d.n, ms(d.p50), ms(d.p90), ms(d.p99), ms(d.p999), ms(d.mx))
}

func kb(bytes float64) string { return fmt.Sprintf("%.1f KB", bytes/1024) }
func mb(bytes float64) string { return fmt.Sprintf("%.1f MB", bytes/(1<<20)) }

// thousands formats n with thin separators: 19,880.
func thousands(n int) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
