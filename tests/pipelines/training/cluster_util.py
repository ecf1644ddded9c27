"""A loopback TF_CONFIG cluster for tests: one Python process per task on 127.0.0.1, a bounded wait.

    cluster = cluster_util.make_cluster(chief=1, workers=1, ps=1)
    run = cluster_util.run_cluster(lambda task_type, index: [sys.executable, '-m', 'pipelines', 'train', ...],
                                   cluster, log_dir, evaluator=True, timeout=300)
    run.logs['chief:0'], run.seconds

Every task process gets its own TF_CONFIG (cluster + task) in the environment, its stdout and stderr in
`log_dir/<type>-<index>.log`, and its own process group. The run succeeds when every chief, worker and
evaluator process has exited with status 0; parameter servers never exit by themselves (the Estimator's
`ps` task joins its gRPC server forever), so they are stopped once the others are done. On a non-zero exit
or when `timeout` seconds pass, every process of the run is killed and `ClusterError` says which task
failed, with the end of each log.

`python -m tests.pipelines.training.cluster_util train --model-dir D --strategy S --steps N` is the tiny self-contained
Estimator job the cluster tests start in each task (a linear model with one sync batch norm); the
pipelines CLI (`python -m pipelines train --config F --model-dir D`) can take its place.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

LOCALHOST = '127.0.0.1'
# Tasks that run to completion by themselves; everything else (ps) is a server that is stopped at the end.
FINISHING_TASKS = ('chief', 'master', 'worker', 'evaluator')


class ClusterError(RuntimeError):
  pass


def free_ports(count):
  """`count` distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released)."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((LOCALHOST, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def make_cluster(chief=1, workers=1, ps=1):
  """TF_CONFIG `cluster` dict on free loopback ports: {'chief': [...], 'worker': [...], 'ps': [...]}.

  Jobs with zero tasks are left out (e.g. chief=0, ps=0 for a two-worker multi-worker mirrored cluster, where
  worker 0 is the chief). The evaluator is not part of the cluster (TF_CONFIG convention); see `run_cluster`.
  """
  sizes = [('chief', chief), ('worker', workers), ('ps', ps)]
  ports = iter(free_ports(sum(n for _, n in sizes)))
  return {job: ['%s:%d' % (LOCALHOST, next(ports)) for _ in range(n)] for job, n in sizes if n}


def tf_config(cluster, task_type, index=0):
  """The TF_CONFIG JSON string of one task."""
  return json.dumps({'cluster': cluster, 'task': {'type': task_type, 'index': index}})


def tasks_of(cluster, evaluator=False):
  """[(task_type, index)] of the cluster, chief first, plus ('evaluator', 0) when asked."""
  order = ['chief', 'master', 'worker', 'ps']
  tasks = [(job, i) for job in sorted(cluster, key=lambda j: order.index(j) if j in order else len(order))
           for i in range(len(cluster[job]))]
  if evaluator:
    tasks.append(('evaluator', 0))
  return tasks


class ClusterRun(object):
  """Processes of one cluster run: `start`, then `wait` (or `kill`). Results in `returncodes` and `logs`."""

  def __init__(self, command, cluster, log_dir, evaluator=False, env=None, cwd=None):
    self.command = command
    self.cluster = cluster
    self.log_dir = log_dir
    self.tasks = tasks_of(cluster, evaluator)
    self.env = env
    self.cwd = cwd
    self.procs = {}
    self.returncodes = {}
    self.logs = {}
    self.seconds = None
    self._files = {}
    self._start = None

  @staticmethod
  def name(task_type, index):
    return '%s:%d' % (task_type, index)

  def log_path(self, task_type, index):
    return os.path.join(self.log_dir, '%s-%d.log' % (task_type, index))

  def start(self):
    if not os.path.isdir(self.log_dir):
      os.makedirs(self.log_dir)
    self._start = time.time()
    for task_type, index in self.tasks:
      env = dict(os.environ if self.env is None else self.env)
      env['TF_CONFIG'] = tf_config(self.cluster, task_type, index)
      env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
      argv = self.command(task_type, index) if callable(self.command) else list(self.command)
      log = open(self.log_path(task_type, index), 'w')
      self._files[self.name(task_type, index)] = log
      # Own session (= process group): `kill` stops the task and anything it started, and a terminal's
      # Ctrl-C does not reach it.
      self.procs[self.name(task_type, index)] = subprocess.Popen(
          argv, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return self

  def _finishing(self):
    return [n for n in self.procs if n.split(':')[0] in FINISHING_TASKS]

  def wait(self, timeout):
    """Waits until the finishing tasks exit; stops the servers; raises ClusterError on failure or timeout."""
    deadline = self._start + timeout
    failed = None
    try:
      while True:
        for name in self._finishing():
          code = self.procs[name].poll()
          if code is not None:
            self.returncodes[name] = code
            if code != 0 and failed is None:
              failed = '%s exited with status %d' % (name, code)
        if failed or all(n in self.returncodes for n in self._finishing()):
          break
        if time.time() > deadline:
          running = [n for n in self._finishing() if n not in self.returncodes]
          failed = 'timeout after %ds; still running: %s' % (timeout, ', '.join(running))
          break
        time.sleep(0.2)
    finally:
      self.kill()
      self.seconds = time.time() - self._start
      self._read_logs()
    if failed:
      raise ClusterError('%s\n%s' % (failed, self.summary()))
    return self

  def kill(self):
    """Kills every process of this run that is still running (by process group), then reaps them."""
    for name, proc in self.procs.items():
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
          pass
    for name, proc in self.procs.items():
      try:
        code = proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        code = None
      self.returncodes.setdefault(name, code)
    for f in self._files.values():
      f.close()

  def _read_logs(self):
    for task_type, index in self.tasks:
      with open(self.log_path(task_type, index)) as f:
        self.logs[self.name(task_type, index)] = f.read()

  def summary(self, tail=2500):
    parts = []
    for name in self.procs:
      parts.append('---- %s (status %s) ----\n%s' % (name, self.returncodes.get(name),
                                                    self.logs.get(name, '')[-tail:]))
    return '\n'.join(parts)


def run_cluster(command, cluster, log_dir, evaluator=False, timeout=300, env=None, cwd=None):
  """Starts one process per task of `cluster` (+ an evaluator), waits at most `timeout` seconds.

  Args:
    command: argv list, or callable (task_type, index) -> argv list.
    cluster: TF_CONFIG cluster dict (see `make_cluster`).
    log_dir: where each task's output goes (`<type>-<index>.log`).
    evaluator: also start an `evaluator` task (outside the cluster, as TF_CONFIG expects).
    timeout: seconds until everything is killed and ClusterError raised.
    env: environment of the processes (default: this one); TF_CONFIG is set per task.
    cwd: working directory of the processes.

  Returns:
    The finished ClusterRun: `returncodes`, `logs` (name 'type:index' -> text), `seconds`.
  """
  return ClusterRun(command, cluster, log_dir, evaluator, env, cwd).start().wait(timeout)


# ----------------------------------------------------------------------------------------------------------
# The tiny Estimator job each task runs in the cluster tests.

def _tiny_job(model_dir, strategy, steps, batch_size, cpu_devices=1, worker_delay_secs=None, step_sleep_secs=0.0):
  """train_and_evaluate of a linear model with one sync batch norm; prints 'CLUSTER DONE <task> replicas <n> ...'."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from pipelines.training import distribution  # pylint: disable=g-import-not-at-top
  from pipelines.training import sync_batch_norm

  tf.logging.set_verbosity(tf.logging.INFO)

  class SleepHook(tf.train.SessionRunHook):
    """Sleeps after every training step (stretches a tiny run so that late workers still take part)."""

    def after_run(self, run_context, run_values):
      time.sleep(step_sleep_secs)

  # TF_CONFIG is read here, when the strategy and then the RunConfig are built (never at import time).
  placement = distribution.make_distribution(strategy, cpu_devices=cpu_devices)
  per_replica = distribution.per_replica_batch_size(batch_size, placement.num_replicas)
  rng = np.random.RandomState(0)
  x = rng.randn(64, 4).astype(np.float32)
  y = (x.dot(np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)) + 0.25).astype(np.float32)

  def input_fn():
    return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat().batch(per_replica, drop_remainder=True)

  def model_fn(features, labels, mode):
    # fused=False: tf-slim's fused path for rank-2 inputs fails on TF 2.15 (tf_slim utils uses ops.Tensor).
    net = sync_batch_norm.sync_batch_norm(features['x'], center=True, scale=True, decay=0.9, fused=False,
                                       is_training=mode == tf.estimator.ModeKeys.TRAIN)
    w = tf.get_variable('w', [4, 1], initializer=tf.zeros_initializer())
    b = tf.get_variable('b', [1], initializer=tf.zeros_initializer())
    pred = tf.matmul(net, w) + b
    loss = tf.reduce_mean(tf.square(pred - labels))
    if mode == tf.estimator.ModeKeys.EVAL:
      return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops={'mse': tf.metrics.mean(loss)})
    opt = tf.train.GradientDescentOptimizer(0.05)
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
      train_op = opt.minimize(loss, global_step=tf.train.get_or_create_global_step())
    hooks = [SleepHook()] if step_sleep_secs > 0 else []
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op, training_hooks=hooks)

  session_config = placement.session_config(tf.ConfigProto(allow_soft_placement=True))
  run_config = tf.estimator.RunConfig(model_dir=model_dir, save_checkpoints_steps=max(1, steps // 2),
                                      log_step_count_steps=max(1, steps // 4), tf_random_seed=1,
                                      experimental_max_worker_delay_secs=worker_delay_secs,
                                      **placement.run_config_kwargs(session_config))
  estimator = tf.estimator.Estimator(model_fn, model_dir=model_dir, config=run_config)
  train_spec = tf.estimator.TrainSpec(input_fn, max_steps=steps)
  eval_spec = tf.estimator.EvalSpec(input_fn, steps=2, start_delay_secs=0, throttle_secs=1)
  tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
  task = json.loads(os.environ.get('TF_CONFIG', '{}')).get('task', {})
  checkpoint = tf.train.latest_checkpoint(model_dir)
  step = int(checkpoint.split('-')[-1]) if checkpoint else -1
  # Another task may be rewriting the checkpoint state right now: a worker's `step` is only indicative.
  print('CLUSTER DONE %s:%s replicas %d step %d' % (task.get('type'), task.get('index'), placement.num_replicas,
                                                    step))
  sys.stdout.flush()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command')
  train = sub.add_parser('train')
  train.add_argument('--model-dir', required=True)
  train.add_argument('--strategy', default='parameter_server')
  train.add_argument('--steps', type=int, default=20)
  train.add_argument('--batch-size', type=int, default=8)
  train.add_argument('--cpu-devices', type=int, default=1)
  train.add_argument('--step-sleep-secs', type=float, default=0.0, help='sleep after every training step')
  train.add_argument('--worker-delay-secs', type=int, default=None,
                     help="cap of the Estimator's start delay of worker i ((i + 1) x 5 s; parameter_server)")
  args = parser.parse_args(argv)
  if args.command != 'train':
    parser.error('expected the train command')
  _tiny_job(args.model_dir, args.strategy, args.steps, args.batch_size, args.cpu_devices, args.worker_delay_secs,
            args.step_sleep_secs)


if __name__ == '__main__':
  main()
