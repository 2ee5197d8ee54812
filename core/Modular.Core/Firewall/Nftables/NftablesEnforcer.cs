using System.Collections.Immutable;
using System.ComponentModel;
using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Core.Status;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// Kernel-mode policy enforcement: keeps one nftables table (<see cref="NftablesRenderer"/>) in step with the
/// rules, and its counters readable as a <see cref="FirewallStatus"/>. Each apply replaces the whole table in
/// one nft transaction (a stale table from a crashed run included); rules that render to the table in force are no
/// apply at all (no transaction, no new generation), so a map pushed again and again costs nothing. Each new table's
/// conntrack generation is cleared from conntrack first (<see cref="MarkGenerations"/>), so a connection revoked
/// once is never trusted again however many tables follow. A script nft refuses leaves the previous
/// table in force and is reported in <see cref="Status"/>, never thrown. nft runs one operation at a time;
/// drop counters are carried over when the table (and its kernel counters) is replaced.
/// </summary>
public sealed class NftablesEnforcer : IAsyncDisposable
{
    /// <summary>Counter reads are spaced at least this many times their own duration apart.</summary>
    public const int ReadPacing = 20;

    /// <summary>How long removing the table at shutdown may take before the agent goes on without it.</summary>
    public static readonly TimeSpan RemoveTimeout = TimeSpan.FromSeconds(10);

    private readonly string _interfaceName;
    private readonly IPAddress? _ownAddress;
    private FirewallOptions _options;
    private readonly INftables _nft;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly MarkGenerations _generations;
    private readonly NftablesFlowLog? _flowLog;
    private readonly KernelFlowRules? _flowRules;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Dictionary<string, long> _earlierDropsByRule = new(StringComparer.Ordinal);
    private long _earlierDefaultDrops;
    private long _earlierInvalidDrops;
    private NftablesPolicy? _inForce;
    private IReadOnlyList<FirewallRule>? _rulesInForce;
    private string? _error;
    private FirewallStatus _status;
    private bool _disposed;
    private bool _tableGone;
    private long _lastReadStarted;
    private TimeSpan _lastReadTook;

    /// <param name="interfaceName">The WireGuard interface whose traffic is filtered (checked: it is written into the script).</param>
    /// <param name="ownAddress">This peer's overlay address, for the mesh DNS accept; null leaves that out.</param>
    /// <param name="time">For pacing counter reads and bounding the removal at shutdown; the system clock when null.</param>
    /// <param name="conntrack">
    /// Where old generations are cleared before reuse (the agent: <see cref="NetlinkConntrack"/>); null: tables never
    /// trust their stamp, every established connection's packets walk the rules.
    /// </param>
    /// <param name="flowLog">Flow logging's marks and drop logs in the table (<see cref="KernelFlowSource"/>); null: none.</param>
    /// <param name="flowRules">Where each table in force is recorded, so flow events name their rules; with <paramref name="flowLog"/>.</param>
    public NftablesEnforcer(string interfaceName, IPAddress? ownAddress, FirewallOptions? options, INftables nft, ILogger logger, TimeProvider? time = null, IConntrack? conntrack = null,
        NftablesFlowLog? flowLog = null, KernelFlowRules? flowRules = null)
    {
        ArgumentNullException.ThrowIfNull(nft);
        ArgumentNullException.ThrowIfNull(logger);
        Table = NftablesRenderer.TableName(interfaceName);
        _interfaceName = interfaceName;
        _ownAddress = ownAddress;
        _options = options ?? new FirewallOptions();
        _nft = nft;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _generations = new MarkGenerations(conntrack, forwarded: false, logger);
        _flowLog = flowLog;
        _flowRules = flowRules;
        _status = new FirewallStatus(FirewallStatus.NftablesMode, 0, ImmutableSortedDictionary<string, long>.Empty, 0, 0, null, null, null, null, "no rules applied yet");
    }

    /// <summary>The table's name (family inet).</summary>
    public string Table { get; }

    /// <summary>The last counters read and whether the latest rules are in force; never waits on nft.</summary>
    public FirewallStatus Status => Volatile.Read(ref _status);

    /// <summary>
    /// Replaces the table with one enforcing <paramref name="rules"/>. False when nft refused it (the previous
    /// table stays; the reason is logged and in <see cref="Status"/>).
    /// </summary>
    public async Task<bool> ApplyAsync(IReadOnlyList<FirewallRule> rules, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return await ApplyLockedAsync(rules, cancellationToken);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary><see cref="ApplyAsync"/> with <see cref="_gate"/> held.</summary>
    private async Task<bool> ApplyLockedAsync(IReadOnlyList<FirewallRule> rules, CancellationToken cancellationToken)
    {
        if (_inForce is not null && !_tableGone
            && NftablesRenderer.Render(_interfaceName, rules, _ownAddress, _options, _generations.Current, _generations.CurrentTrusted, _flowLog).Script == _inForce.Script)
        {
            // The same table: applying it again would only start a new generation (and re-check every connection).
            if (_error is not null)
            {
                _error = null;
                Publish(await ReadCountersAsync(cancellationToken));
            }

            return true;
        }

        var (generation, trusted) = await _generations.NextAsync(cancellationToken);
        var policy = NftablesRenderer.Render(_interfaceName, rules, _ownAddress, _options, generation, trusted, _flowLog);
        // The counters of the table about to go: read now, or they are lost with it.
        var replaced = await ReadCountersAsync(cancellationToken);
        // Known before the table is in force, so its first flows already name their rules (no connection carries
        // this generation yet: it was cleared; if nft refuses the table, the next one records it again).
        _flowRules?.Record(generation, policy);
        var started = _time.GetTimestamp();
        try
        {
            await _nft.ApplyAsync(policy.Script, cancellationToken);
        }
        catch (Exception e) when (IsNftFailure(e))
        {
            _error = $"nft refused the rules, the previous ones stay in force: {e.Message}";
            _logger.LogError("nftables table {Table}: applying {Rules} rules failed, the previous table stays in force: {Problem}", Table, policy.RuleCount, e.Message);
            Publish(replaced);
            return false;
        }

        FoldIntoEarlier(replaced);
        _inForce = policy;
        _rulesInForce = rules;
        _generations.Commit(generation, trusted);
        _tableGone = false;
        _error = null;
        _logger.LogInformation("nftables table {Table}: {Rules} rules enforced on {Interface} in {Ms:F0} ms", Table, policy.RuleCount, _interfaceName,
            _time.GetElapsedTime(started).TotalMilliseconds);
        Publish(ImmutableDictionary<string, long>.Empty);
        return true;
    }

    /// <summary>
    /// Opens (a port) or closes (null) the Rosenpass exchange's accept (<see cref="FirewallOptions.RosenpassPort"/>) while
    /// the agent runs: a PSK provider starts when the account turns Rosenpass on too, not only by the local flag the
    /// table was first rendered with. The rules in force are applied again with it (nothing when it did not change).
    /// </summary>
    public async Task SetRosenpassPortAsync(ushort? port, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_disposed || _options.RosenpassPort == port)
            {
                return;
            }

            _options = _options with { RosenpassPort = port };
            if (_rulesInForce is { } rules)
            {
                await ApplyLockedAsync(rules, cancellationToken);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Reads the counters into <see cref="Status"/>. Skipped when nft is busy (an apply publishes its own), and
    /// paced so reading takes at most 1/<see cref="ReadPacing"/> of the time: nft lists a table of 10,000 rules in
    /// about 0.4 s, which every 3 s would be a steady 12% of a core.
    /// </summary>
    public async Task RefreshAsync(CancellationToken cancellationToken)
    {
        if (_lastReadStarted != 0 && _time.GetElapsedTime(Volatile.Read(ref _lastReadStarted)) < _lastReadTook * ReadPacing)
        {
            return;
        }

        if (!await _gate.WaitAsync(0, cancellationToken))
        {
            return;
        }

        try
        {
            if (!_disposed)
            {
                var started = _time.GetTimestamp();
                Publish(await ReadCountersAsync(cancellationToken));
                _lastReadTook = _time.GetElapsedTime(started);
                Volatile.Write(ref _lastReadStarted, started);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Removes the table: the interface's traffic is no longer filtered by this agent.</summary>
    public async ValueTask DisposeAsync()
    {
        using var bounded = new CancellationTokenSource(RemoveTimeout, _time);
        var entered = await EnterGateAsync(RemoveTimeout / 2);
        if (!entered)
        {
            _logger.LogError("nftables table {Table}: nft still busy at shutdown; removing the table anyway", Table);
        }

        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            await _nft.DeleteTableAsync(NftablesRenderer.Family, Table, bounded.Token);
            _logger.LogInformation("nftables table {Table} removed", Table);
        }
        catch (Exception e) when (IsNftFailure(e) || e is OperationCanceledException)
        {
            _logger.LogError("nftables table {Table} could not be removed (delete it with `nft delete table inet {Table}`): {Problem}", Table, Table, e.Message);
        }
        finally
        {
            if (entered)
            {
                _gate.Release();
            }
        }
    }

    /// <summary>Waits for the gate at most <paramref name="wait"/> on the injected clock (SemaphoreSlim's own timeout is the real one).</summary>
    private async Task<bool> EnterGateAsync(TimeSpan wait)
    {
        using var timeout = new CancellationTokenSource(wait, _time);
        try
        {
            await _gate.WaitAsync(timeout.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task<IReadOnlyDictionary<string, long>> ReadCountersAsync(CancellationToken cancellationToken)
    {
        if (_inForce is null)
        {
            return ImmutableDictionary<string, long>.Empty;
        }

        try
        {
            var json = await _nft.ListCountersJsonAsync(NftablesRenderer.Family, Table, cancellationToken);
            if (json is null)
            {
                _tableGone = true;
                _logger.LogWarning("nftables table {Table} is gone (deleted from outside?); it is written again with the next rules", Table);
                return ImmutableDictionary<string, long>.Empty;
            }

            if (NftablesCounters.TryParse(json, out var packets))
            {
                return packets;
            }

            _logger.LogWarning("nftables table {Table}: could not read nft's JSON output", Table);
        }
        catch (Exception e) when (IsNftFailure(e))
        {
            _logger.LogWarning("nftables table {Table}: reading counters failed: {Problem}", Table, e.Message);
        }

        return ImmutableDictionary<string, long>.Empty;
    }

    private void FoldIntoEarlier(IReadOnlyDictionary<string, long> packetsByCounter)
    {
        if (_inForce is null)
        {
            return;
        }

        foreach (var (counter, packets) in packetsByCounter)
        {
            if (_inForce.DropRuleIdByCounter.TryGetValue(counter, out var ruleId))
            {
                _earlierDropsByRule[ruleId] = _earlierDropsByRule.GetValueOrDefault(ruleId) + packets;
            }
        }

        _earlierDefaultDrops += packetsByCounter.GetValueOrDefault(NftablesRenderer.DefaultDropCounter);
        _earlierInvalidDrops += packetsByCounter.GetValueOrDefault(NftablesRenderer.InvalidCounter);
    }

    /// <summary>Counters of the table in force (<paramref name="packetsByCounter"/>, by counter name) plus those of the tables it replaced.</summary>
    private void Publish(IReadOnlyDictionary<string, long> packetsByCounter)
    {
        var drops = ImmutableSortedDictionary.CreateBuilder<string, long>(StringComparer.Ordinal);
        foreach (var (ruleId, packets) in _earlierDropsByRule)
        {
            drops[ruleId] = packets;
        }

        if (_inForce is not null)
        {
            foreach (var (counter, packets) in packetsByCounter)
            {
                if (_inForce.DropRuleIdByCounter.TryGetValue(counter, out var ruleId))
                {
                    drops[ruleId] = (drops.TryGetValue(ruleId, out var earlier) ? earlier : 0) + packets;
                }
            }

            // Drop rules in force show up with 0 rather than not at all.
            foreach (var ruleId in _inForce.DropRuleIdByCounter.Values)
            {
                if (!drops.ContainsKey(ruleId))
                {
                    drops[ruleId] = 0;
                }
            }
        }

        Volatile.Write(ref _status, new FirewallStatus(
            FirewallStatus.NftablesMode,
            _inForce?.RuleCount ?? 0,
            drops.ToImmutable(),
            _earlierDefaultDrops + packetsByCounter.GetValueOrDefault(NftablesRenderer.DefaultDropCounter),
            _earlierInvalidDrops + packetsByCounter.GetValueOrDefault(NftablesRenderer.InvalidCounter),
            null,
            null,
            null,
            null,
            _inForce is null ? _error ?? "no rules applied yet" : _error));
    }

    /// <summary>What a missing, refusing or hung nft throws (through <see cref="Os.HostCommand"/>).</summary>
    private static bool IsNftFailure(Exception e) => e is IOException or Win32Exception or InvalidOperationException;
}
