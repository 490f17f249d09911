#!/bin/sh
# The container image's entrypoint: `docker run IMAGE train -config ...`
# runs /kakusan/bin/train; `help` (the default command) lists the commands;
# anything else runs as given (a shell, for one).
set -e
case "${1:-help}" in
help | -h | --help)
  echo "kakusan image: docker run [--gpus all] --user \$(id -u):\$(id -g) -v \$PWD/runs:/kakusan/runs IMAGE COMMAND [flags]"
  echo "commands: $(cd /kakusan/bin && ls | grep -v -e '\.so$' -e '\.test$' | tr '\n' ' ')"
  echo "configs:  $(cd /kakusan/configs && ls | tr '\n' ' ')"
  echo "e.g.:     train -config configs/mnist_cond_cpu.yaml"
  exit 0
  ;;
esac
case "$1" in */* | *.so | *.test) ;; *)
  if [ -x "/kakusan/bin/$1" ]; then
    cmd=$1
    shift
    exec "/kakusan/bin/$cmd" "$@"
  fi
  ;;
esac
exec "$@"
