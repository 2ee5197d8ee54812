using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Core.Engine;
using Modular.Server.Flows;

namespace Modular.Server.Tests;

/// <summary>The agent's <see cref="ManagementFlowUploader"/> (what plugins get as IPluginContext.FlowUploader) against a real in-process server.</summary>
public sealed class FlowUploaderTests
{
    [Fact]
    public async Task A_batch_comes_back_acknowledged_and_is_stored()
    {
        await using var server = await TestServer.StartAsync();
        using var key = X25519KeyPair.Generate();
        var serverKey = await RegisterAsync(server, key);
        await using var uploader = Uploader(server, key, () => new FlowTarget(server.Address, serverKey));
        var batch = FlowSamples.Batch(DateTimeOffset.UtcNow, 3);

        var result = await uploader.UploadAsync(batch, CancellationToken.None);

        Assert.Null(result.Error);
        Assert.False(result.Rejected);
        Assert.Equal(batch.Select(e => e.Id).Order(), result.Acknowledged.Order());
        Assert.Equal(3, await server.Store.CountFlowEventsAsync(CancellationToken.None));

        // Retried (an ack the plugin missed): acknowledged again, stored once.
        Assert.Equal(3, (await uploader.UploadAsync(batch, CancellationToken.None)).Acknowledged.Count);
        Assert.Equal(3, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task With_the_server_gone_a_call_fails_and_the_next_server_acknowledges()
    {
        var dataDir = TestServer.NewDataDir();
        try
        {
            using var key = X25519KeyPair.Generate();
            var batch = FlowSamples.Batch(DateTimeOffset.UtcNow, 2);
            FlowTarget? target = null;
            await using var uploader = Uploader(null, key, () => target);
            Uri address;
            await using (var first = await TestServer.StartAsync(dataDir))
            {
                address = first.Address;
                target = new FlowTarget(address, await RegisterAsync(first, key));
                Assert.Single((await uploader.UploadAsync(batch.AsMemory(0, 1), CancellationToken.None)).Acknowledged);
            }

            var failed = await uploader.UploadAsync(batch, CancellationToken.None);
            Assert.False(failed.Rejected);
            Assert.Empty(failed.Acknowledged);
            Assert.Contains("flow upload failed", failed.Error, StringComparison.Ordinal);

            // The restarted server (on another port here): a new login moves the target and the same batch goes through.
            await using var second = await TestServer.StartAsync(dataDir);
            target = new FlowTarget(second.Address, target!.Value.ServerKey);
            var ok = await uploader.UploadAsync(batch, CancellationToken.None);
            Assert.Equal(2, ok.Acknowledged.Count);
            Assert.Equal(2, await second.Store.CountFlowEventsAsync(CancellationToken.None));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dataDir, recursive: true);
        }
    }

    [Fact]
    public async Task A_batch_the_server_refuses_is_refused_not_failed()
    {
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton(new FlowApiLimits(MaxBatchEvents: 2)));
        using var key = X25519KeyPair.Generate();
        var serverKey = await RegisterAsync(server, key);
        await using var uploader = Uploader(server, key, () => new FlowTarget(server.Address, serverKey));

        var refused = await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 3), CancellationToken.None);

        Assert.True(refused.Rejected);
        Assert.Empty(refused.Acknowledged);
        Assert.Contains("at most 2", refused.Error, StringComparison.Ordinal);
        Assert.Equal(0, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task An_unregistered_key_is_refused()
    {
        await using var server = await TestServer.StartAsync();
        using var key = X25519KeyPair.Generate();
        using var other = X25519KeyPair.Generate();
        var serverKey = await RegisterAsync(server, other);
        await using var uploader = Uploader(server, key, () => new FlowTarget(server.Address, serverKey));

        var refused = await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 1), CancellationToken.None);

        Assert.True(refused.Rejected);
        Assert.Contains("not registered", refused.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Before_login_or_without_the_flow_component_a_call_fails()
    {
        await using var server = await TestServer.StartAsync(tweak: c => c with { Components = new HashSet<string>(["management", "signal"], StringComparer.Ordinal) });
        using var key = X25519KeyPair.Generate();
        var serverKey = await RegisterAsync(server, key);
        FlowTarget? target = null;
        await using var uploader = Uploader(server, key, () => target);

        var early = await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 1), CancellationToken.None);
        Assert.False(early.Rejected);
        Assert.Equal("not logged in to management yet", early.Error);

        target = new FlowTarget(server.Address, serverKey);
        var off = await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 1), CancellationToken.None);
        Assert.False(off.Rejected);
        Assert.Contains("does not serve the flow API", off.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Too_many_events_throw_and_after_dispose_every_call_throws()
    {
        using var key = X25519KeyPair.Generate();
        var uploader = Uploader(null, key, () => null);

        await Assert.ThrowsAsync<ArgumentException>(async () => await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, uploader.MaxBatchEvents + 1), CancellationToken.None));
        Assert.Empty((await uploader.UploadAsync(ReadOnlyMemory<FlowEvent>.Empty, CancellationToken.None)).Acknowledged);

        await uploader.DisposeAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 1), CancellationToken.None));
    }

    [Fact]
    public async Task A_server_that_never_answers_fails_the_call_after_the_timeout_on_the_agents_clock()
    {
        // A stream that takes the batch and never answers; the fake clock reaches the timeout without waiting.
        using var key = X25519KeyPair.Generate();
        using var serverKey = X25519KeyPair.Generate();
        var silent = new SilentCalls();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var uploader = new ManagementFlowUploader(key, () => new FlowTarget(new Uri("http://127.0.0.1:1"), serverKey.PublicKey), _ => silent, "", time);

        var call = uploader.UploadAsync(FlowSamples.Batch(DateTimeOffset.UtcNow, 1), CancellationToken.None).AsTask();
        await silent.Received.Task.WaitAsync(TimeSpan.FromSeconds(30));
        time.Advance(ManagementFlowUploader.AckTimeout);
        var result = await call.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(result.Rejected);
        Assert.Contains("no acknowledgement", result.Error, StringComparison.Ordinal);
    }

    internal static ManagementFlowUploader Uploader(TestServer? server, X25519KeyPair key, Func<FlowTarget?> target)
        => new(key, target, server is null ? null : _ => server.Channel().CreateCallInvoker(), "", TimeProvider.System);

    /// <summary>Registers <paramref name="key"/> as a peer; returns the server key management proved.</summary>
    internal static async Task<WgKey> RegisterAsync(TestServer server, X25519KeyPair key)
    {
        var management = new ManagementClient(server.Channel(), key);
        await management.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("alpha"), CancellationToken.None);
        return await management.GetServerKeyAsync(CancellationToken.None);
    }

    /// <summary>A Flow API stream that takes every batch and answers none (a hung server).</summary>
    private sealed class SilentCalls : CallInvoker
    {
        public TaskCompletionSource Received { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options)
            => new(new Writer<TRequest>(Received), new Silence<TResponse>(options.CancellationToken), Task.FromResult(new Metadata()), () => Status.DefaultSuccess, () => [], () => { });

        public override TResponse BlockingUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) => throw new NotSupportedException();

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) => throw new NotSupportedException();

        public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) => throw new NotSupportedException();

        public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options) => throw new NotSupportedException();

        private sealed class Writer<T>(TaskCompletionSource received) : IClientStreamWriter<T>
        {
            public WriteOptions? WriteOptions { get; set; }

            public Task WriteAsync(T message)
            {
                received.TrySetResult();
                return Task.CompletedTask;
            }

            public Task WriteAsync(T message, CancellationToken cancellationToken) => WriteAsync(message);

            public Task CompleteAsync() => Task.CompletedTask;
        }

        private sealed class Silence<T>(CancellationToken call) : IAsyncStreamReader<T>
        {
            public T Current => throw new InvalidOperationException("nothing was read");

            public async Task<bool> MoveNext(CancellationToken cancellationToken)
            {
                using var either = CancellationTokenSource.CreateLinkedTokenSource(call, cancellationToken);
                await Task.Delay(Timeout.Infinite, either.Token);
                return false;
            }
        }
    }
}
