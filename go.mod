module kakusan

go 1.26
