using Microsoft.Extensions.Logging;
using Modular.Core.Network;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// Owns the engine across restarts: runs one engine at a time, each with its own cancellation, and restarts it when
/// asked (<see cref="RequestRestart"/>) or when its network watcher reports a change. A restart cancels the engine
/// and waits until it has stopped fully (interface, routes, rules, sockets closed) before the next one starts, so two
/// engines never share the host. A request for an engine that is already down or already being replaced (a
/// generation that is not the current one) is dropped, so no delayed, needless restart fires. Restarts are counted
/// in status (<see cref="AgentStatus.EngineRestarts"/>).
/// <para>Thread-safe: requests come from any thread; <see cref="RunAsync"/> runs once.</para>
/// </summary>
public sealed class EngineSupervisor
{
    private readonly Func<long, CancellationToken, Task> _runEngine;
    private readonly Func<CancellationToken, Task<NetworkChange>>? _watchNetwork;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;

    // The engine running now; null while none runs or one is being stopped for a restart.
    private volatile Running? _current;
    private long _restarts;

    /// <param name="runEngine">Builds and runs engine number <c>generation</c> (1, 2, …) until its token fires.</param>
    /// <param name="watchNetwork">Returns once the network changed (one <see cref="NetworkMonitor"/> per engine); null: no watching.</param>
    internal EngineSupervisor(
        Func<long, CancellationToken, Task> runEngine,
        Func<CancellationToken, Task<NetworkChange>>? watchNetwork,
        StatusRecorder recorder,
        ILogger logger)
    {
        _runEngine = runEngine;
        _watchNetwork = watchNetwork;
        _recorder = recorder;
        _logger = logger;
    }

    /// <summary>How many times the engine was restarted (a simple counter; status and metrics read it).</summary>
    public long Restarts => Interlocked.Read(ref _restarts);

    /// <summary>The running engine's number (1 for the first), or 0 while none runs.</summary>
    public long Generation => _current?.Generation ?? 0;

    /// <summary>
    /// Restarts the engine numbered <paramref name="generation"/> (null: whichever runs now). False, and nothing
    /// happens, when no engine runs, it already stopped on its own, it is already being restarted, or it is not
    /// that generation any more.
    /// </summary>
    public bool RequestRestart(string reason, long? generation = null)
    {
        if (_current is not { } current || (generation is { } wanted && wanted != current.Generation) || current.Run.IsCompleted)
        {
            return false;
        }

        return current.Restart.TrySetResult(reason);
    }

    /// <summary>Runs engines until <paramref name="stopping"/> fires (then returns once the last one stopped) or one fails (rethrown).</summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        for (var next = 1L; ; next++)
        {
            var generation = next;
            using var engineStop = CancellationTokenSource.CreateLinkedTokenSource(stopping);
            var restart = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            // Known as the current engine before it runs its first step (a step may ask for its own restart).
            var start = new Task<Task>(() => _runEngine(generation, engineStop.Token));
            var run = start.Unwrap();
            _current = new Running(generation, run, restart);
            start.Start(TaskScheduler.Default);
            var watch = WatchAsync(generation, engineStop.Token);
            var stopped = Task.Delay(Timeout.Infinite, stopping);

            var first = await Task.WhenAny(run, restart.Task, stopped);
            _current = null;
            if (first == restart.Task && !run.IsCompleted && !stopping.IsCancellationRequested)
            {
                _logger.LogInformation("Restarting the engine: {Reason}", await restart.Task);
            }

            await engineStop.CancelAsync();
            try
            {
                await run;
            }
            catch (OperationCanceledException) when (engineStop.IsCancellationRequested)
            {
                // Its own stop.
            }
            catch (Exception e) when (first != run && AgentEngine.IsOwnCancellation(e, engineStop.Token))
            {
                // Its own stop, seen as a cancelled gRPC call (RpcException Cancelled): expected, so no error and no
                // stack trace (rendering one also makes the runtime open the assembly's symbols, a descriptor for life).
                _logger.LogDebug("The engine stopped: {Problem}", e.Message);
            }
            catch (Exception) when (first != run && engineStop.IsCancellationRequested && !stopping.IsCancellationRequested)
            {
                // A real failure while stopping for a restart: logged with its trace, and the next engine starts anyway.
                _logger.LogError(run.Exception?.InnerException, "The engine failed while stopping for a restart");
            }

            await watch;
            if (first == run || stopping.IsCancellationRequested)
            {
                // Stopped on its own (a fatal error was rethrown above) or the daemon stops: no next engine.
                return;
            }

            var count = Interlocked.Increment(ref _restarts);
            _recorder.SetEngineRestarts(count);
        }
    }

    // Requests a restart of this generation when the network changes; ends quietly with the engine.
    private async Task WatchAsync(long generation, CancellationToken cancellationToken)
    {
        if (_watchNetwork is null)
        {
            return;
        }

        try
        {
            var change = await _watchNetwork(cancellationToken);
            var burst = change.Events > 1 ? $" (and {change.Events - 1} more changes in the same burst)" : "";
            RequestRestart($"the network changed: {change.Reason}{burst}", generation);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
#pragma warning disable CA1031 // A watcher that fails leaves the engine running unwatched; it never stops it.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning("Network changes are not watched: {Problem}", e.Message);
        }
    }

    private sealed record Running(long Generation, Task Run, TaskCompletionSource<string> Restart);
}
