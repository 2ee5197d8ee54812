using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Engine;
using Modular.Core.Network;
using Modular.Core.Status;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// The daemon's engine owner: a restart stops the engine fully before the next starts, requests for an engine that
/// is down or already replaced do nothing, network changes restart it once, and restarts are counted in status.
/// </summary>
public sealed class EngineSupervisorTests
{
    [Fact]
    public async Task A_restart_waits_until_the_engine_stopped_fully_before_the_next_starts_and_is_counted()
    {
        var recorder = NewRecorder();
        var started = new List<long>();
        var running = 0;
        var overlapped = false;
        var firstStopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var secondStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var supervisor = new EngineSupervisor(
            async (generation, stop) =>
            {
                overlapped |= Interlocked.Increment(ref running) > 1;
                lock (started)
                {
                    started.Add(generation);
                }

                if (generation == 2)
                {
                    secondStarted.TrySetResult();
                }

                try
                {
                    await Task.Delay(Timeout.Infinite, stop);
                }
                catch (OperationCanceledException)
                {
                    if (generation == 1)
                    {
                        // Tearing down takes a while: the next engine must not start meanwhile.
                        firstStopping.TrySetResult();
                        await releaseFirst.Task;
                    }

                    Interlocked.Decrement(ref running);
                    throw;
                }
            },
            null,
            recorder,
            NullLogger.Instance);
        using var stop = new CancellationTokenSource();
        var run = supervisor.RunAsync(stop.Token);

        await WaitForGeneration(supervisor, 1);
        Assert.True(supervisor.RequestRestart("test"));
        Assert.False(supervisor.RequestRestart("again, while the first restart is under way"));
        await firstStopping.Task;
        Assert.False(secondStarted.Task.IsCompleted, "the second engine waits for the first to stop");
        Assert.Equal(0, supervisor.Generation);
        releaseFirst.SetResult();
        await secondStarted.Task;

        Assert.False(overlapped, "never two engines at once");
        Assert.Equal([1, 2], started);
        Assert.Equal(1, supervisor.Restarts);
        Assert.Equal(1, recorder.Snapshot().EngineRestarts);
        Assert.False(supervisor.RequestRestart("aimed at the first engine, which is gone", generation: 1));

        await stop.CancelAsync();
        await run;
        Assert.Equal(1, supervisor.Restarts);
        Assert.False(supervisor.RequestRestart("after the daemon stopped"));
    }

    [Fact]
    public async Task An_engine_that_is_already_down_is_not_restarted_and_its_failure_surfaces()
    {
        var recorder = NewRecorder();
        var fail = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var supervisor = new EngineSupervisor(
            async (_, _) =>
            {
                await fail.Task;
                throw new EngineFatalException("fatal");
            },
            null,
            recorder,
            NullLogger.Instance);
        var run = supervisor.RunAsync(CancellationToken.None);
        await WaitForGeneration(supervisor, 1);
        fail.SetResult();
        await Assert.ThrowsAsync<EngineFatalException>(() => run);
        Assert.False(supervisor.RequestRestart("a late network change"));
        Assert.Equal(0, supervisor.Restarts);
    }

    [Fact]
    public async Task A_network_change_restarts_the_engine_once_and_the_next_engine_gets_a_new_watcher()
    {
        var recorder = NewRecorder();
        var changes = new List<TaskCompletionSource<NetworkChange>>();
        var watchers = new SemaphoreSlim(0);
        var supervisor = new EngineSupervisor(
            (_, stop) => Task.Delay(Timeout.Infinite, stop),
            stop =>
            {
                var change = new TaskCompletionSource<NetworkChange>(TaskCreationOptions.RunContinuationsAsynchronously);
                stop.Register(() => change.TrySetCanceled(stop));
                lock (changes)
                {
                    changes.Add(change);
                }

                watchers.Release();
                return change.Task;
            },
            recorder,
            NullLogger.Instance);
        using var stop = new CancellationTokenSource();
        var run = supervisor.RunAsync(stop.Token);

        await watchers.WaitAsync();
        changes[0].SetResult(new NetworkChange("default route via 10.0.2.1 dev eth1 added", 3));
        await watchers.WaitAsync();
        await WaitForGeneration(supervisor, 2);
        Assert.Equal(1, supervisor.Restarts);
        Assert.Equal(2, changes.Count);
        Assert.False(changes[1].Task.IsCompleted, "the new engine's watcher waits for the next change");

        await stop.CancelAsync();
        await run;
        Assert.Equal(1, recorder.Snapshot().EngineRestarts);
        Assert.True(changes[1].Task.IsCanceled, "the watcher stops with its engine");
    }

    [Fact]
    public async Task A_cancelled_grpc_call_on_the_stop_path_is_no_error_but_a_real_failure_while_stopping_is()
    {
        // A cancelled gRPC call surfaces as RpcException(Cancelled), not OperationCanceledException: on a restart it is
        // the engine's own stop, logged without an error (and without its stack trace); anything else stays an error.
        var logger = new ListLogger();
        var supervisor = new EngineSupervisor(
            async (generation, stop) =>
            {
                try
                {
                    await Task.Delay(Timeout.Infinite, stop);
                }
                catch (OperationCanceledException) when (generation == 1)
                {
                    throw new RpcException(new Grpc.Core.Status(StatusCode.Cancelled, "Call canceled by the client."));
                }
                catch (OperationCanceledException) when (generation == 2)
                {
                    throw new IOException("closing the interface failed");
                }
            },
            null,
            NewRecorder(),
            logger);
        using var stop = new CancellationTokenSource();
        var run = supervisor.RunAsync(stop.Token);

        await WaitForGeneration(supervisor, 1);
        Assert.True(supervisor.RequestRestart("test"));
        await WaitForGeneration(supervisor, 2);
        Assert.Empty(logger.Errors);

        Assert.True(supervisor.RequestRestart("test"));
        await WaitForGeneration(supervisor, 3);
        Assert.Equal(["The engine failed while stopping for a restart"], logger.Errors);
        Assert.Equal(2, supervisor.Restarts);

        await stop.CancelAsync();
        await run;
    }

    private static async Task WaitForGeneration(EngineSupervisor supervisor, long generation)
    {
        // The supervisor publishes the engine before it runs it; this only waits for the loop to get there.
        while (supervisor.Generation != generation)
        {
            await Task.Yield();
        }
    }

    private static StatusRecorder NewRecorder() => new(
        new InterfaceStatus("mdl0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        "key",
        new ServiceStatus("", false, null),
        new ServiceStatus("", false, null));
}
