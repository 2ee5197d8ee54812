using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;

namespace Modular.Plugins.Netflow.Ipfix;

/// <summary>
/// Exports flow events as IPFIX over UDP to one collector (<c>[netflow] ipfix_collector</c>): the templates at start
/// and every <c>template_refresh</c> (RFC 7011 section 8.4: over UDP templates are re-sent on a timer), the records
/// of each End and Drop event as they come (see <see cref="IpfixRecord.FromEvent"/>).
/// </summary>
/// <remarks>
/// <see cref="Enqueue"/> is called on the packet path: it puts the event in a bounded queue (never blocking; a full
/// queue drops the new event and counts it in <see cref="QueueOverflows"/>) and wakes the one export loop, which
/// owns the socket, the message builder and the Start times. Counters are read from any thread.
/// </remarks>
internal sealed class IpfixExporter : IAsyncDisposable
{
    /// <summary>How long a collector host name that did not resolve waits before the next try.</summary>
    internal static readonly TimeSpan ResolveRetry = TimeSpan.FromSeconds(30);

    private const uint ObservationDomainId = 1;

    private readonly string _collector;
    private readonly TimeSpan _templateRefresh;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Channel<FlowEvent> _queue;
    private readonly WakeSignal _wake = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly int _maxStarts;
    private ITimer? _templateTimer;
    private Task _loop = Task.CompletedTask;

    // Export loop only.
    private readonly Dictionary<Guid, long> _starts = [];
    private readonly IpfixMessageBuilder _builder = new();
    private readonly byte[] _buffer = new byte[IpfixEncoder.MaxMessageLength];
    private readonly IpfixRecord[] _records = new IpfixRecord[2];
    private Socket? _socket;
    private IPEndPoint? _endpoint;
    private DateTimeOffset _resolveAfter = DateTimeOffset.MinValue;
    private uint _sequence;

    // Any thread.
    private int _templatesDue = 1;
    private long _exported;
    private long _messages;
    private long _queueOverflows;
    private volatile string? _lastError;

    public IpfixExporter(string collector, TimeSpan templateRefresh, int capacity, TimeProvider time, ILogger logger)
    {
        _collector = collector;
        _templateRefresh = templateRefresh;
        _time = time;
        _logger = logger;
        _maxStarts = capacity;
        _queue = Channel.CreateBounded<FlowEvent>(
            new BoundedChannelOptions(capacity) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true, SingleWriter = false },
            _ => Interlocked.Increment(ref _queueOverflows));
    }

    /// <summary>Events whose records were sent to the collector.</summary>
    public long Exported => Interlocked.Read(ref _exported);

    /// <summary>IPFIX messages sent (templates included).</summary>
    public long Messages => Interlocked.Read(ref _messages);

    /// <summary>Events not exported because the queue was full.</summary>
    public long QueueOverflows => Interlocked.Read(ref _queueOverflows);

    /// <summary>Why export fails now; null while it works.</summary>
    public string? LastError => _lastError;

    /// <summary>Starts the export loop (templates first) and the template timer.</summary>
    public void Start()
    {
        _templateTimer = _time.CreateTimer(_ => RequestTemplates(), null, _templateRefresh, _templateRefresh);
        _loop = Task.Run(() => RunAsync(_stop.Token));
    }

    /// <summary>Queues <paramref name="flowEvent"/> for export. Never blocks.</summary>
    public void Enqueue(FlowEvent flowEvent)
    {
        if (_queue.Writer.TryWrite(flowEvent))
        {
            _wake.Set();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_templateTimer is not null)
        {
            await _templateTimer.DisposeAsync();
        }

        _queue.Writer.TryComplete();
        await _stop.CancelAsync();
        await _loop;
        _socket?.Dispose();
        _stop.Dispose();
        _wake.Dispose();
    }

    private void RequestTemplates()
    {
        Volatile.Write(ref _templatesDue, 1);
        _wake.Set();
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                _wake.Reset();
                if (Volatile.Read(ref _templatesDue) == 0 && !_queue.Reader.TryPeek(out _))
                {
                    await _wake.WaitAsync(cancellationToken);
                }

                await ExportQueuedAsync(cancellationToken);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping: what is queued still goes out (a few UDP sends, no waiting on the network; no name lookup either).
            try
            {
                if (_endpoint is not null)
                {
                    await ExportQueuedAsync(CancellationToken.None);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                _logger.LogDebug("IPFIX export: the last messages were not sent at stop: {Problem}", e.Message);
            }
        }
    }

    /// <summary>Sends the templates when due, then every queued event's records, in messages as full as they get.</summary>
    private async Task ExportQueuedAsync(CancellationToken cancellationToken)
    {
        if (!await EnsureEndpointAsync(cancellationToken))
        {
            // No collector address yet: the queued events cannot go anywhere; they are not exported.
            while (_queue.Reader.TryRead(out var skipped))
            {
                StartOf(skipped);
                Remember(skipped);
            }

            return;
        }

        if (Interlocked.Exchange(ref _templatesDue, 0) == 1)
        {
            var length = IpfixEncoder.WriteTemplates(_buffer, ExportTime(), _sequence, ObservationDomainId);
            await SendAsync(length, events: 0, records: 0, cancellationToken);
        }

        while (_queue.Reader.TryRead(out var flowEvent))
        {
            var count = IpfixRecord.FromEvent(flowEvent, StartOf(flowEvent), _records);
            Remember(flowEvent);
            if (count == 0)
            {
                continue;
            }

            if (!_builder.TryAdd(_records.AsSpan(0, count)))
            {
                await FlushAsync(cancellationToken);
                _builder.TryAdd(_records.AsSpan(0, count));
            }
        }

        await FlushAsync(cancellationToken);
    }

    private async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (_builder.RecordCount == 0)
        {
            return;
        }

        var events = _builder.EventCount;
        var records = _builder.RecordCount;
        var length = _builder.Build(_buffer, ExportTime(), _sequence, ObservationDomainId);
        await SendAsync(length, events, records, cancellationToken);
    }

    private async ValueTask SendAsync(int length, int events, int records, CancellationToken cancellationToken)
    {
        try
        {
            await _socket!.SendToAsync(_buffer.AsMemory(0, length), SocketFlags.None, _endpoint!, cancellationToken);
            Interlocked.Increment(ref _messages);
            Interlocked.Add(ref _exported, events);
            if (_lastError is not null)
            {
                _logger.LogInformation("IPFIX export to {Collector} works again", _collector);
                _lastError = null;
            }
        }
        catch (SocketException e)
        {
            SetError($"IPFIX export to {_collector} failed: {e.Message}");
        }
        finally
        {
            // The sequence counts the records the exporter sent, also those a failed send lost (RFC 7011 section 10.3.2:
            // the collector sees the gap). Templates carry no data records.
            _sequence = unchecked(_sequence + (uint)records);
        }
    }

    private async ValueTask<bool> EnsureEndpointAsync(CancellationToken cancellationToken)
    {
        if (_endpoint is not null)
        {
            return true;
        }

        if (_time.GetUtcNow() < _resolveAfter)
        {
            return false;
        }

        var (host, port) = NetflowSettings.ParseHostPort(_collector)!.Value;
        try
        {
            var address = IPAddress.TryParse(host, out var literal)
                ? literal
                : (await Dns.GetHostAddressesAsync(host, cancellationToken)).FirstOrDefault()
                  ?? throw new SocketException((int)SocketError.HostNotFound);
            _endpoint = new IPEndPoint(address, port);
            _socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            return true;
        }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            _resolveAfter = _time.GetUtcNow() + ResolveRetry;
            SetError($"IPFIX collector {_collector} did not resolve: {e.Message}");
            return false;
        }
    }

    private void SetError(string error)
    {
        if (_lastError != error)
        {
            _logger.LogWarning("{Error}", error);
        }

        _lastError = error;
    }

    // When the flow of an End event started: the time of its Start event, kept until the End (bounded: when the table
    // is full it starts over, and flows started before that export their end time as their start).
    private long? StartOf(FlowEvent flowEvent)
        => flowEvent.Type == FlowEventType.End && _starts.Remove(flowEvent.FlowId, out var start) ? start : null;

    private void Remember(FlowEvent flowEvent)
    {
        if (flowEvent.Type != FlowEventType.Start)
        {
            return;
        }

        if (_starts.Count >= _maxStarts)
        {
            _starts.Clear();
        }

        _starts[flowEvent.FlowId] = flowEvent.Timestamp.ToUnixTimeMilliseconds();
    }

    private uint ExportTime() => (uint)_time.GetUtcNow().ToUnixTimeSeconds();
}
