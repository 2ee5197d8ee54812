using System.Net;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

public sealed class FlowSinkFanOutTests
{
    private static readonly FlowEvent Event = new(
        Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UnixEpoch, FlowEventType.Start, FlowDirection.Egress, 17,
        IPAddress.Parse("100.64.0.2"), 40000, IPAddress.Parse("100.64.0.1"), 53, 0, 0, 0, 0, 1, 60, "dns", null, null);

    [Fact]
    public void Every_sink_gets_every_event_even_after_one_throws()
    {
        var first = new RecordingSink();
        var last = new RecordingSink();
        var fanOut = new FlowSinkFanOut([first, new ThrowingSink(), last]);

        fanOut.Emit(Event);
        fanOut.Emit(Event);

        Assert.Equal(2, first.Events.Count);
        Assert.Equal(2, last.Events.Count);
        Assert.Same(Event, last.Events[0]);
        Assert.Equal(2, fanOut.Failures);
    }

    [Fact]
    public async Task Disposing_disposes_every_sink_and_reports_the_one_that_failed()
    {
        var first = new RecordingSink();
        var last = new RecordingSink();
        var fanOut = new FlowSinkFanOut([first, new ThrowingSink(), last]);

        var error = await Assert.ThrowsAsync<AggregateException>(async () => await fanOut.DisposeAsync());

        Assert.Equal("close broken", Assert.Single(error.InnerExceptions).Message);
        Assert.Equal(1, first.Disposals);
        Assert.Equal(1, last.Disposals);
    }

    private sealed class ThrowingSink : IFlowSink
    {
        public void Emit(FlowEvent flowEvent) => throw new InvalidOperationException("emit broken");

        public ValueTask DisposeAsync() => throw new InvalidOperationException("close broken");
    }
}
