package splitmix

import "testing"

func TestMix(t *testing.T) {
	// splitmix64's first outputs from states 0 and 1.
	if got := Mix(0); got != 0xe220a8397b1dcdaf {
		t.Errorf("Mix(0) = %#x", got)
	}
	if got := Mix(0x9e3779b97f4a7c15); got != 0x6e789e6aa1b965f4 {
		t.Errorf("Mix(γ) = %#x", got)
	}
}
