using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Kernel;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// The conntrack mark bits the firewall owns (kernel mode), one layout for both of its tables. A table stamps the
/// connections its rules accepted with its generation, and trusts only its own stamp: a connection stamped by an
/// older table walks the rules again on its next packet. Before a generation is used again every connection still
/// stamped with it is cleared (<see cref="IConntrack.ClearMarksAsync"/>), so a stamp never comes back into validity.
/// <list type="bullet">
/// <item>bits 24-30 (<see cref="GenerationMask"/>): the generation, 1..<see cref="MaxGeneration"/>; 0 = checked by no table.</item>
/// <item>bit 31 (<see cref="ForwardedBit"/>): 0 = stamped by the policy table (this peer's own traffic, input/output), 1 = by the routing peer's forward table.</item>
/// <item>bits 0-23 (<see cref="FreeMask"/>): not the firewall's; every rule keeps them as they are (free for flow logging and others).</item>
/// </list>
/// With flow logging on in kernel mode (<see cref="KernelFlowSource"/>) the policy table also owns the free bits:
/// <list type="bullet">
/// <item>bit 23 (<see cref="FlowBit"/>): a connection of this peer's own mesh traffic (opened through the tunnel), the only ones reported;</item>
/// <item>bit 22 (<see cref="EgressBit"/>): this peer opened it (egress); 0 = the remote peer did (ingress);</item>
/// <item>bits 0-21 (<see cref="RuleIndexMask"/>): which accept rule of the stamping table let it in (1-based, per generation); 0 = none (default accept, mesh DNS).</item>
/// </list>
/// </summary>
public static class ConntrackMarks
{
    /// <summary>All the bits the firewall owns.</summary>
    public const uint FirewallMask = 0xFF00_0000;

    public const uint GenerationMask = 0x7F00_0000;

    public const uint ForwardedBit = 0x8000_0000;

    /// <summary>Bits the firewall never reads nor changes.</summary>
    public const uint FreeMask = 0x00FF_FFFF;

    public const int GenerationShift = 24;

    /// <summary>Flow logging (kernel mode): set on every connection opened through the tunnel, so only mesh flows are reported.</summary>
    public const uint FlowBit = 0x0080_0000;

    /// <summary>Flow logging: set when this peer opened the connection (egress).</summary>
    public const uint EgressBit = 0x0040_0000;

    /// <summary>Flow logging: the accept rule that let the connection in, as an index into the stamping table's rule IDs (1-based; 0 = none).</summary>
    public const uint RuleIndexMask = 0x003F_FFFF;

    public const int MaxGeneration = 127;

    /// <summary>The firewall bits of a connection stamped with <paramref name="generation"/> by the policy table (<paramref name="forwarded"/> false) or the forward table.</summary>
    public static uint Stamp(int generation, bool forwarded)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(generation, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(generation, MaxGeneration);
        return ((uint)generation << GenerationShift) | (forwarded ? ForwardedBit : 0);
    }
}

/// <summary>The conntrack table, as far as the firewall changes it.</summary>
public interface IConntrack
{
    /// <summary>
    /// Clears the bits of <paramref name="mask"/> in the mark of every connection whose <c>mark &amp; mask</c> is
    /// <paramref name="value"/>; returns how many were changed. <see cref="IOException"/> when conntrack cannot be reached.
    /// </summary>
    Task<int> ClearMarksAsync(uint value, uint mask, CancellationToken cancellationToken);
}

/// <summary>
/// ctnetlink over a NETLINK_NETFILTER socket opened in the constructor (so in the network namespace of the thread
/// that creates it): a dump filtered by mark in the kernel, then one update per connection found, which changes
/// only the masked bits (CTA_MARK with CTA_MARK_MASK) — the connection itself stays, so a connection the new rules
/// still allow goes on after one more walk through them. No `conntrack` tool is needed.
/// </summary>
public sealed class NetlinkConntrack : IConntrack, IDisposable
{
    private const ushort SubsysCtnetlink = 1;
    private const ushort MsgNew = 0;
    private const ushort MsgGet = 1;
    private const ushort TupleOrig = 1;
    private const ushort Mark = 8;
    private const ushort Zone = 18;
    private const ushort MarkMask = 21;
    private const int NoSuchEntry = 2;

    private readonly GenericNetlinkSocket _socket;
    private readonly Lock _lock = new();
    private bool _disposed;

    /// <exception cref="IOException">No netlink socket could be opened.</exception>
    public NetlinkConntrack()
    {
        _socket = new GenericNetlinkSocket(GenericNetlinkSocket.NetlinkNetfilter);
    }

    /// <summary>The host's conntrack, or null (logged: established connections then walk the rules on every packet).</summary>
    public static NetlinkConntrack? TryOpen(ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        try
        {
            return new NetlinkConntrack();
        }
        catch (IOException e)
        {
            logger.LogWarning("conntrack netlink unavailable ({Problem}): established connections are checked against the rules on every packet", e.Message);
            return null;
        }
    }

    public Task<int> ClearMarksAsync(uint value, uint mask, CancellationToken cancellationToken)
        => Task.Run(() => ClearMarks(value, mask), cancellationToken);

    public void Dispose()
    {
        lock (_lock)
        {
            if (!_disposed)
            {
                _disposed = true;
                _socket.Dispose();
            }
        }
    }

    private int ClearMarks(uint value, uint mask)
    {
        lock (_lock)
        {
            // A closed descriptor's number may belong to another socket by now: never send on it.
            if (_disposed)
            {
                throw new IOException("conntrack netlink socket closed");
            }

            var found = new List<(byte Family, byte[] Tuple, byte[]? Zone)>();
            var dump = Message(MsgGet, NetlinkWriter.FlagRequest | NetlinkWriter.FlagDump, family: 0);
            dump.Bytes(Mark, BigEndian(value));
            dump.Bytes(MarkMask, BigEndian(mask));
            _socket.Request(dump.Finish(), (buffer, _) =>
            {
                foreach (var (type, payload) in NetlinkReader.Messages(buffer))
                {
                    if (type >> 8 != SubsysCtnetlink || payload.Length < 4)
                    {
                        continue;
                    }

                    byte[]? tuple = null;
                    byte[]? zone = null;
                    uint? mark = null;
                    foreach (var (attribute, data) in NetlinkReader.Attributes(payload.AsSpan(4)))
                    {
                        switch (attribute)
                        {
                            case TupleOrig: tuple = data; break;
                            case Zone: zone = data; break;
                            case Mark when data.Length == 4: mark = BinaryPrimitives.ReadUInt32BigEndian(data); break;
                        }
                    }

                    // The kernel filtered already; checked again so a kernel without the filter cannot widen the sweep.
                    if (tuple is not null && mark is { } m && (m & mask) == value)
                    {
                        found.Add((payload[0], tuple, zone));
                    }
                }
            });

            var changed = 0;
            foreach (var (family, tuple, zone) in found)
            {
                var update = Message(MsgNew, NetlinkWriter.FlagRequest | NetlinkWriter.FlagAck, family);
                update.Bytes(TupleOrig | NetlinkWriter.FlagNested, tuple);
                if (zone is not null)
                {
                    update.Bytes(Zone, zone);
                }

                // new mark = (mark & ~CTA_MARK_MASK) ^ CTA_MARK: the masked bits cleared, the rest kept.
                update.Bytes(Mark, BigEndian(0));
                update.Bytes(MarkMask, BigEndian(mask));
                try
                {
                    _socket.Request(update.Finish(), (_, _) => { });
                    changed++;
                }
                catch (IOException e) when (e.Message.EndsWith($"errno {NoSuchEntry}", StringComparison.Ordinal))
                {
                    // Gone since the dump: nothing left to clear.
                }
            }

            return changed;
        }
    }

    private NetlinkWriter Message(ushort message, ushort flags, byte family)
    {
        var writer = new NetlinkWriter();
        // nfgenmsg: family, version 0, res_id 0 — the same bytes as a generic netlink header's command, version, reserved.
        writer.BeginMessage((ushort)((SubsysCtnetlink << 8) | message), flags, _socket.NextSequence(), family, 0);
        return writer;
    }

    private static byte[] BigEndian(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        return bytes;
    }
}

/// <summary>
/// One table's generations (<see cref="ConntrackMarks"/>): the next one is cleared from conntrack before its table
/// is applied, so no connection carries it unless that table's rules accepted it. Without conntrack (or when the
/// sweep fails) the next table must not trust its stamp: <see cref="NextAsync"/> says so, and that table re-checks
/// every established connection against its rules on every packet — slower, never wrong.
/// </summary>
public sealed class MarkGenerations(IConntrack? conntrack, bool forwarded, ILogger logger)
{
    private bool _warned;

    /// <summary>The generation of the table in force; 0 before the first.</summary>
    public int Current { get; private set; }

    /// <summary>Whether the table in force trusts its stamp.</summary>
    public bool CurrentTrusted { get; private set; }

    /// <summary>The generation for the next table, and whether it may trust it (it was cleared from conntrack).</summary>
    public async Task<(int Generation, bool Trusted)> NextAsync(CancellationToken cancellationToken)
    {
        var generation = (Current % ConntrackMarks.MaxGeneration) + 1;
        if (conntrack is null)
        {
            return (generation, false);
        }

        try
        {
            await conntrack.ClearMarksAsync(ConntrackMarks.Stamp(generation, forwarded), ConntrackMarks.FirewallMask, cancellationToken);
            return (generation, true);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            if (!_warned)
            {
                _warned = true;
                logger.LogWarning("conntrack: clearing old marks failed ({Problem}): established connections are checked against the rules on every packet until it works", e.Message);
            }

            return (generation, false);
        }
    }

    /// <summary>The table of <paramref name="generation"/> is in force.</summary>
    public void Commit(int generation, bool trusted)
    {
        Current = generation;
        CurrentTrusted = trusted;
    }
}
