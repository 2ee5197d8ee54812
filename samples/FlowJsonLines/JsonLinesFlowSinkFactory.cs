using System.Composition;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;

namespace FlowJsonLines;

/// <summary>
/// A flow sink plugin: appends every flow event to a file as one JSON object per line. Settings, in
/// <c>[plugins.sample-jsonl]</c>: <c>path</c> (default <c>flows.jsonl</c> in the agent's state folder) and
/// <c>capacity</c> (events queued before new ones are dropped, default 10000).
/// </summary>
[Export(typeof(IFlowSinkFactory))]
[PluginName("sample-jsonl")]
public sealed class JsonLinesFlowSinkFactory : IFlowSinkFactory
{
    /// <inheritdoc/>
    public string Description => "Sample flow sink: writes each flow event as a JSON line to a file.";

    /// <inheritdoc/>
    public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        var path = context.Settings.TryGetValue("path", out var p) && p is string text ? text : Path.Combine(context.StateDirectory, "flows.jsonl");
        var capacity = context.Settings.TryGetValue("capacity", out var c) && c is long n and > 0 ? (int)n : 10_000;
        return ValueTask.FromResult<IFlowSink>(new JsonLinesFlowSink(path, capacity, context.LoggerFactory.CreateLogger<JsonLinesFlowSink>()));
    }
}

/// <summary>
/// <see cref="Emit"/> runs on the packet path, from several threads: it only queues (never blocks, drops when
/// full). One writer task owns the file; <see cref="DisposeAsync"/> drains the queue and closes it.
/// </summary>
public sealed class JsonLinesFlowSink : IFlowSink
{
    private readonly Channel<FlowEvent> _queue;
    private readonly Task _writer;
    private readonly ILogger _logger;
    private long _dropped;

    /// <summary>Starts the writer; the file is appended to.</summary>
    public JsonLinesFlowSink(string path, int capacity, ILogger logger)
    {
        _logger = logger;
        _queue = Channel.CreateBounded<FlowEvent>(new BoundedChannelOptions(capacity)
        {
            FullMode = BoundedChannelFullMode.DropWrite,
            SingleReader = true,
        });
        _writer = Task.Run(() => WriteAsync(path));
    }

    /// <summary>Events dropped because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <inheritdoc/>
    public void Emit(FlowEvent flowEvent)
    {
        if (!_queue.Writer.TryWrite(flowEvent))
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _writer;
    }

    private async Task WriteAsync(string path)
    {
        try
        {
            await using var file = new StreamWriter(path, append: true);
            await foreach (var e in _queue.Reader.ReadAllAsync())
            {
                await file.WriteLineAsync(JsonSerializer.Serialize(new
                {
                    id = e.Id,
                    flow_id = e.FlowId,
                    timestamp = e.Timestamp,
                    type = e.Type.ToString().ToLowerInvariant(),
                    direction = e.Direction.ToString().ToLowerInvariant(),
                    protocol = e.Protocol,
                    source = $"{e.SourceAddress}:{e.SourcePort}",
                    destination = $"{e.DestinationAddress}:{e.DestinationPort}",
                    rx_packets = e.RxPackets,
                    rx_bytes = e.RxBytes,
                    tx_packets = e.TxPackets,
                    tx_bytes = e.TxBytes,
                    rule_id = e.RuleId,
                }));
                if (_queue.Reader.Count == 0)
                {
                    await file.FlushAsync();
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            _logger.LogWarning("Flow sink cannot write {Path}: {Reason}", path, ex.Message);
        }
    }
}
